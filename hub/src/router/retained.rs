//! Retained messages: the last retained message per topic, looked up by topic filter.
//!
//! Owns the in-memory retained set (the store module persists it separately). A trie keyed by
//! topic level, like the subscription tree but with concrete topics as keys, so a subscribe
//! to `a/b/+` visits only `a/b`'s children and `a/#` only `a`'s subtree. Nodes live in an
//! arena; clearing the last message below a node prunes it.

use std::collections::HashMap;

use super::RouterError;
use super::filter::{MULTI_LEVEL, SINGLE_LEVEL, TopicFilter, is_dollar_topic, level_at};

/// Index of a node in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeId(usize);

const ROOT: NodeId = NodeId(0);

struct Node<M> {
    children: HashMap<Box<str>, NodeId>,
    message: Option<M>,
}

impl<M> Node<M> {
    fn new() -> Self {
        Self {
            children: HashMap::new(),
            message: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.message.is_none()
    }
}

/// Retained messages by topic, generic over the message type (the hub stores
/// `Arc<Message>`, so `matching` clones are cheap).
pub struct RetainedStore<M> {
    /// Node arena; `nodes[0]` is the root (the level above the first topic level).
    nodes: Vec<Node<M>>,
    /// Arena slots of pruned nodes, reused before the arena grows.
    free: Vec<NodeId>,
    /// Number of retained messages.
    len: usize,
}

impl<M: Clone> Default for RetainedStore<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Clone> RetainedStore<M> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::new()],
            free: Vec::new(),
            len: 0,
        }
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no message is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Retains `message` for `topic` (a PUBLISH topic name), replacing and returning the
    /// previous one.
    ///
    /// A PUBLISH with RETAIN and an empty payload must call [`RetainedStore::clear`] instead.
    pub fn set(&mut self, topic: &str, message: M) -> Option<M> {
        let mut node = ROOT;
        for level in topic.split('/') {
            node = match self.nodes[node.0].children.get(level) {
                Some(&child) => child,
                None => {
                    let child = self.alloc();
                    self.nodes[node.0].children.insert(level.into(), child);
                    child
                }
            };
        }
        let previous = self.nodes[node.0].message.replace(message);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes and returns the message retained for `topic`, pruning nodes left empty.
    pub fn clear(&mut self, topic: &str) -> Option<M> {
        let mut path = Vec::new();
        let mut node = ROOT;
        for level in topic.split('/') {
            let child = *self.nodes[node.0].children.get(level)?;
            path.push((node, level));
            node = child;
        }
        let removed = self.nodes[node.0].message.take()?;
        self.len -= 1;
        for (parent, level) in path.into_iter().rev() {
            if !self.nodes[node.0].is_empty() {
                break;
            }
            self.nodes[parent.0].children.remove(level);
            self.nodes[node.0] = Node::new();
            self.free.push(node);
            node = parent;
        }
        Some(removed)
    }

    /// Appends to `out` every retained message whose topic matches `filter`.
    ///
    /// A `$share/{group}/` prefix is ignored (the filter after it is used); whether a shared
    /// subscription gets retained messages at all is the session's decision. Topics starting
    /// with `$` are not matched by a leading wildcard.
    pub fn matching(&self, filter: &str, out: &mut Vec<M>) -> Result<(), RouterError> {
        let parsed = TopicFilter::parse(filter)?;
        let filter = parsed.filter();
        // (node, start of the next filter level); every filter has at least one level.
        let mut stack = vec![(ROOT, Some(0))];
        // Subtrees matched whole by `#`.
        let mut subtrees = Vec::new();
        while let Some((node, next_level)) = stack.pop() {
            let current = &self.nodes[node.0];
            let Some(pos) = next_level else {
                out.extend(current.message.iter().cloned());
                continue;
            };
            let (level, next_level) = level_at(filter, pos);
            let skip_dollar = node == ROOT;
            match level {
                MULTI_LEVEL => {
                    // `a/#` matches `a` itself; the root holds no message.
                    out.extend(current.message.iter().cloned());
                    subtrees.extend(
                        current
                            .children
                            .iter()
                            .filter(|(key, _)| !(skip_dollar && is_dollar_topic(key)))
                            .map(|(_, &child)| child),
                    );
                }
                SINGLE_LEVEL => stack.extend(
                    current
                        .children
                        .iter()
                        .filter(|(key, _)| !(skip_dollar && is_dollar_topic(key)))
                        .map(|(_, &child)| (child, next_level)),
                ),
                literal => {
                    if let Some(&child) = current.children.get(literal) {
                        stack.push((child, next_level));
                    }
                }
            }
        }
        while let Some(node) = subtrees.pop() {
            let current = &self.nodes[node.0];
            out.extend(current.message.iter().cloned());
            subtrees.extend(current.children.values().copied());
        }
        Ok(())
    }

    fn alloc(&mut self) -> NodeId {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.nodes.push(Node::new());
                NodeId(self.nodes.len() - 1)
            }
        }
    }

    /// Number of nodes in use, root included (for tests of the pruning invariant).
    #[cfg(test)]
    fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn store(topics: &[&str]) -> RetainedStore<String> {
        let mut store = RetainedStore::new();
        for topic in topics {
            store.set(topic, (*topic).to_owned());
        }
        store
    }

    /// Topics of the retained messages matching `filter`, sorted.
    fn matching(store: &RetainedStore<String>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store
            .matching(filter, &mut out)
            .unwrap_or_else(|e| panic!("{filter}: {e}"));
        out.sort();
        out
    }

    const TOPICS: [&str; 9] = [
        "a", "a/b", "a/b/c", "a/c", "b", "/a", "a//b", "$SYS/up", "a/$x",
    ];

    #[test]
    fn set_replaces_and_clear_removes() {
        let mut s = RetainedStore::new();
        assert_eq!(s.set("a/b", 1), None);
        assert_eq!(s.set("a/b", 2), Some(1));
        assert_eq!(s.set("a", 3), None);
        assert_eq!(s.len(), 2);
        assert_eq!(s.clear("a/b"), Some(2));
        assert_eq!(s.clear("a/b"), None);
        assert_eq!(s.clear("nothing/here"), None);
        assert_eq!(s.len(), 1);
        let mut out = Vec::new();
        s.matching("#", &mut out).unwrap();
        assert_eq!(out, [3]);
    }

    #[test]
    fn exact_and_single_level_filters() {
        let s = store(&TOPICS);
        assert_eq!(matching(&s, "a/b"), ["a/b"]);
        assert_eq!(matching(&s, "a/+"), ["a/$x", "a/b", "a/c"]);
        assert_eq!(matching(&s, "+"), ["a", "b"]);
        assert_eq!(matching(&s, "+/a"), ["/a"]);
        assert_eq!(matching(&s, "a/+/b"), ["a//b"]);
        assert!(matching(&s, "a/b/c/d").is_empty());
    }

    #[test]
    fn multi_level_filter_includes_the_parent_level() {
        let s = store(&TOPICS);
        assert_eq!(
            matching(&s, "a/#"),
            ["a", "a/$x", "a//b", "a/b", "a/b/c", "a/c"]
        );
        assert_eq!(matching(&s, "a/b/#"), ["a/b", "a/b/c"]);
        assert_eq!(matching(&s, "+/b/#"), ["a/b", "a/b/c"]);
    }

    #[test]
    fn dollar_topics_need_an_explicit_first_level() {
        let s = store(&TOPICS);
        let all = matching(&s, "#");
        assert!(!all.contains(&"$SYS/up".to_owned()));
        assert_eq!(all.len(), TOPICS.len() - 1);
        assert!(matching(&s, "+/up").is_empty());
        assert_eq!(matching(&s, "$SYS/#"), ["$SYS/up"]);
        assert_eq!(matching(&s, "$SYS/+"), ["$SYS/up"]);
    }

    #[test]
    fn share_prefix_is_ignored() {
        let s = store(&TOPICS);
        assert_eq!(matching(&s, "$share/g/a/+"), matching(&s, "a/+"));
    }

    #[test]
    fn invalid_filters_are_rejected() {
        let s = store(&TOPICS);
        let mut out = Vec::new();
        assert_eq!(
            s.matching("a/#/b", &mut out),
            Err(RouterError::MultiLevelWildcardNotLast)
        );
        assert_eq!(s.matching("", &mut out), Err(RouterError::EmptyFilter));
        assert!(out.is_empty());
    }

    #[test]
    fn clearing_everything_prunes_every_node() {
        let mut s = store(&TOPICS);
        // Clearing a parent keeps the children reachable.
        assert_eq!(s.clear("a").as_deref(), Some("a"));
        assert_eq!(matching(&s, "a/b"), ["a/b"]);
        for topic in TOPICS {
            s.clear(topic);
        }
        assert!(s.is_empty());
        assert_eq!(s.live_nodes(), 1);
        let mut out = Vec::new();
        s.matching("#", &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn very_deep_topics_do_not_exhaust_the_stack() {
        let deep = "a/".repeat(50_000);
        let mut s = RetainedStore::new();
        s.set(&deep, 1);
        let mut out = Vec::new();
        s.matching("#", &mut out).unwrap();
        assert_eq!(out, [1]);
        assert_eq!(s.clear(&deep), Some(1));
        assert_eq!(s.live_nodes(), 1);
    }

    /// Reference matcher (the same rules as the subscription tree's model).
    fn model_matches(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let filter: Vec<&str> = filter.split('/').collect();
        let topic: Vec<&str> = topic.split('/').collect();
        for (i, level) in filter.iter().enumerate() {
            match *level {
                "#" => return true,
                "+" if i < topic.len() => {}
                literal if topic.get(i) == Some(&literal) => {}
                _ => return false,
            }
        }
        filter.len() == topic.len()
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "", "$s"]);
        prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "", "$s", "+"]);
        (prop::collection::vec(level, 0..4), any::<bool>())
            .prop_map(|(levels, hash)| match (levels.is_empty(), hash) {
                (true, _) => "#".to_owned(),
                (false, true) => format!("{}/#", levels.join("/")),
                (false, false) => levels.join("/"),
            })
            .prop_filter("the empty filter is invalid", |f| !f.is_empty())
    }

    proptest! {
        /// Property: after any sequence of `set` and `clear`, `matching(filter)` returns exactly
        /// the messages of a `BTreeMap` model whose topics the model matcher accepts, `len`
        /// equals the model's size, and clearing everything leaves only the root node.
        #[test]
        fn matching_agrees_with_the_model(
            ops in prop::collection::vec((topic_strategy(), any::<bool>()), 0..40),
            filters in prop::collection::vec(filter_strategy(), 1..8),
        ) {
            let mut store = RetainedStore::new();
            let mut model = BTreeMap::new();
            for (i, (topic, set)) in ops.into_iter().enumerate() {
                if set {
                    prop_assert_eq!(store.set(&topic, i), model.insert(topic, i));
                } else {
                    prop_assert_eq!(store.clear(&topic), model.remove(&topic));
                }
            }
            prop_assert_eq!(store.len(), model.len());
            for filter in &filters {
                let mut out = Vec::new();
                store.matching(filter, &mut out).unwrap();
                out.sort_unstable();
                let mut expected: Vec<usize> = model
                    .iter()
                    .filter(|(topic, _)| model_matches(filter, topic))
                    .map(|(_, &m)| m)
                    .collect();
                expected.sort_unstable();
                prop_assert_eq!(out, expected, "filter {:?}", filter);
            }
            for topic in model.keys() {
                store.clear(topic);
            }
            prop_assert!(store.is_empty());
            prop_assert_eq!(store.live_nodes(), 1);
        }
    }
}
