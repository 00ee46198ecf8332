//! The subscription tree: topic filters → subscribers, and PUBLISH fan-out.
//!
//! Owns every subscription of every session (ordinary and shared), their options, the
//! round-robin position of each share group, and the per-client index used to list and drop a
//! session's subscriptions.
//!
//! Layout: nodes live in one arena (`Vec<Node>`, indices as links, a free list for reuse), so
//! the routing walk is an explicit-stack loop that can mutate share-group cursors in place. A
//! node holds the subscriptions whose filter ends at it (`exact`) and those whose filter is it
//! followed by `/#` (`multi`); `+` is a dedicated child link, literal levels a hash map.
//!
//! Overlapping subscriptions: when several of a client's ordinary subscriptions match one
//! topic, the client gets ONE copy, with the highest granted QoS among them, every distinct
//! subscription identifier among them, and retain-as-published if any of them asks for it.
//! MQTT 5.0 §3.3.4 allows either one copy per subscription or this merged copy; one copy keeps
//! traffic to constrained devices down and is what MQTT 3.1.1 §3.3.5 asks for.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;

use tern_mqtt::QoS;

use super::RouterError;
use super::filter::{MULTI_LEVEL, SINGLE_LEVEL, TopicFilter, is_dollar_topic, level_at};

/// When retained messages are sent for a new subscription (MQTT 5.0 §3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of every subscribe (0; the only 3.1.1 behaviour).
    #[default]
    SendAlways,
    /// Send retained messages only if the subscription did not already exist (1).
    SendIfNew,
    /// Never send retained messages for this subscription (2).
    Never,
}

impl RetainHandling {
    /// The option for a wire value, `None` for 3 (reserved, a protocol error).
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::SendAlways),
            1 => Some(Self::SendIfNew),
            2 => Some(Self::Never),
            _ => None,
        }
    }
}

/// Options of one subscription, as granted by the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the subscriber receives with.
    pub qos: QoS,
    /// Do not deliver messages this client published itself (v5 only).
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages as published (v5 only).
    pub retain_as_published: bool,
    /// Retained-message behaviour on subscribe (v5 only).
    pub retain_handling: RetainHandling,
    /// Subscription identifier to echo in matching PUBLISH packets (v5 only).
    pub identifier: Option<NonZeroU32>,
}

/// What [`SubscriptionTree::subscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// The client had no subscription with this filter.
    New,
    /// The client already had this filter; its options were replaced.
    Replaced {
        /// The options in force before.
        previous: SubscriptionOptions,
    },
}

impl SubscribeOutcome {
    /// Whether the subscription did not exist before (retain handling 1 sends only then).
    pub fn is_new(&self) -> bool {
        matches!(self, Self::New)
    }
}

/// One of a client's subscriptions, as listed by [`SubscriptionTree::subscriptions_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription<'a> {
    /// The filter exactly as subscribed, including any `$share/{group}/` prefix.
    pub filter: &'a str,
    /// The options granted.
    pub options: SubscriptionOptions,
}

/// Subscription identifiers carried by one delivery.
///
/// Zero or one identifier (the common case) is stored inline; only a client with several
/// overlapping identified subscriptions makes the overflow vector allocate. Identifiers are
/// distinct and kept in matching order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionIds {
    /// The first identifier. Invariant: `rest` is empty while this is `None`.
    first: Option<NonZeroU32>,
    /// Further identifiers, all distinct from `first` and each other.
    rest: Vec<NonZeroU32>,
}

impl SubscriptionIds {
    fn from_option(id: Option<NonZeroU32>) -> Self {
        Self {
            first: id,
            rest: Vec::new(),
        }
    }

    fn add(&mut self, id: Option<NonZeroU32>) {
        let Some(id) = id else { return };
        match self.first {
            None => self.first = Some(id),
            Some(first) if first == id => {}
            Some(_) => {
                if !self.rest.contains(&id) {
                    self.rest.push(id);
                }
            }
        }
    }

    /// Number of identifiers.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Whether there are no identifiers.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The identifiers, first match first.
    pub fn iter(&self) -> impl Iterator<Item = NonZeroU32> + '_ {
        self.first.into_iter().chain(self.rest.iter().copied())
    }

    /// Whether `id` is among the identifiers.
    pub fn contains(&self, id: NonZeroU32) -> bool {
        self.first == Some(id) || self.rest.contains(&id)
    }
}

/// Which kind of subscription produced a [`Delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryKind {
    /// The client's ordinary subscriptions (merged: at most one per client and message).
    Direct,
    /// One share group chose this client; independent of its ordinary subscriptions.
    Shared,
}

/// One copy of a published message to hand to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<K> {
    /// The receiving client.
    pub client: K,
    /// Maximum QoS granted by the matching subscription(s); the session sends
    /// `min(message QoS, qos)`.
    pub qos: QoS,
    /// Whether to keep the message's RETAIN flag.
    pub retain_as_published: bool,
    /// Subscription identifiers of the matching subscription(s).
    pub identifiers: SubscriptionIds,
    /// Ordinary or shared subscription.
    pub kind: DeliveryKind,
    /// For [`DeliveryKind::Shared`]: the shared subscription as subscribed
    /// (`$share/{group}/{filter}`), to hand its message to another member if this one's
    /// session ends first ([`SubscriptionTree::redeliver_shared`]).
    pub share: Option<Arc<str>>,
}

impl<K> Delivery<K> {
    fn new(client: K, options: &SubscriptionOptions, kind: DeliveryKind) -> Self {
        Self {
            client,
            qos: options.qos,
            retain_as_published: options.retain_as_published,
            identifiers: SubscriptionIds::from_option(options.identifier),
            kind,
            share: None,
        }
    }

    fn shared(member: &SharedMember<K>, share: Arc<str>) -> Self
    where
        K: Clone,
    {
        Self {
            share: Some(share),
            ..Self::new(member.client.clone(), &member.options, DeliveryKind::Shared)
        }
    }

    fn merge(&mut self, options: &SubscriptionOptions) {
        self.qos = self.qos.max(options.qos);
        self.retain_as_published |= options.retain_as_published;
        self.identifiers.add(options.identifier);
    }
}

/// Index of a node in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeId(usize);

const ROOT: NodeId = NodeId(0);

/// Where in a node a filter ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The filter's last level is this node.
    Exact,
    /// The filter is this node followed by `/#` (or just `#` at the root).
    Multi,
}

/// How a node hangs off its parent.
#[derive(Debug, Clone, Copy)]
enum Link<'a> {
    Level(&'a str),
    SingleLevelWildcard,
}

struct SharedMember<K> {
    client: K,
    options: SubscriptionOptions,
}

/// One `$share/{group}/{filter}` group: the members and the round-robin position.
struct SharedGroup<K> {
    name: Box<str>,
    /// The subscription as subscribed, `$share/{group}/{filter}`.
    share: Arc<str>,
    /// Members in subscription order; a re-subscribe keeps its position.
    members: Vec<SharedMember<K>>,
    /// Index of the member to try first for the next message.
    next: usize,
}

impl<K: Eq> SharedGroup<K> {
    /// Chooses the member for the next message: the first online member at or after the
    /// cursor, else (nobody online) the member at the cursor. Advances the cursor past it.
    fn pick(&mut self, is_online: &dyn Fn(&K) -> bool) -> Option<&SharedMember<K>> {
        let len = self.members.len();
        if len == 0 {
            return None;
        }
        let start = self.next % len;
        let chosen = (0..len)
            .map(|offset| (start + offset) % len)
            .find(|&i| self.members.get(i).is_some_and(|m| is_online(&m.client)))
            .unwrap_or(start);
        self.next = (chosen + 1) % len;
        self.members.get(chosen)
    }

    /// [`pick`](Self::pick) among online members only; `None` when nobody is online.
    fn pick_online(&mut self, is_online: &dyn Fn(&K) -> bool) -> Option<&SharedMember<K>> {
        let len = self.members.len();
        let start = self.next % len.max(1);
        let chosen = (0..len)
            .map(|offset| (start + offset) % len)
            .find(|&i| self.members.get(i).is_some_and(|m| is_online(&m.client)))?;
        self.next = (chosen + 1) % len;
        self.members.get(chosen)
    }

    fn remove(&mut self, client: &K) -> bool {
        let Some(i) = self.members.iter().position(|m| m.client == *client) else {
            return false;
        };
        self.members.remove(i);
        // Keep the cursor on the same next member.
        if i < self.next {
            self.next -= 1;
        }
        if self.next >= self.members.len() {
            self.next = 0;
        }
        true
    }
}

/// Subscriptions ending at one place in the trie.
struct Subscribers<K> {
    direct: HashMap<K, SubscriptionOptions>,
    shared: Vec<SharedGroup<K>>,
}

impl<K: Clone + Eq + Hash> Subscribers<K> {
    fn new() -> Self {
        Self {
            direct: HashMap::new(),
            shared: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.shared.is_empty()
    }

    fn insert_shared(
        &mut self,
        share: &str,
        group: &str,
        client: K,
        options: SubscriptionOptions,
    ) -> Option<SubscriptionOptions> {
        let group = match self.shared.iter().position(|g| &*g.name == group) {
            Some(i) => &mut self.shared[i],
            None => {
                self.shared.push(SharedGroup {
                    name: group.into(),
                    share: share.into(),
                    members: Vec::new(),
                    next: 0,
                });
                let last = self.shared.len() - 1;
                &mut self.shared[last]
            }
        };
        match group.members.iter_mut().find(|m| m.client == client) {
            Some(member) => Some(std::mem::replace(&mut member.options, options)),
            None => {
                group.members.push(SharedMember { client, options });
                None
            }
        }
    }

    fn remove(&mut self, share_group: Option<&str>, client: &K) -> bool {
        match share_group {
            None => self.direct.remove(client).is_some(),
            Some(name) => {
                let Some(i) = self.shared.iter().position(|g| &*g.name == name) else {
                    return false;
                };
                let removed = self.shared[i].remove(client);
                if self.shared[i].members.is_empty() {
                    self.shared.swap_remove(i);
                }
                removed
            }
        }
    }
}

/// One topic level. Subscriber sets are boxed and present only while non-empty: most nodes
/// are intermediate levels, and this keeps them at a fraction of the size.
struct Node<K> {
    /// Literal next levels.
    children: HashMap<Box<str>, NodeId>,
    /// The `+` next level.
    single: Option<NodeId>,
    /// Subscriptions whose filter ends at this level.
    exact: Option<Box<Subscribers<K>>>,
    /// Subscriptions whose filter is this level followed by `#`.
    multi: Option<Box<Subscribers<K>>>,
}

impl<K: Clone + Eq + Hash> Node<K> {
    fn new() -> Self {
        Self {
            children: HashMap::new(),
            single: None,
            exact: None,
            multi: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.single.is_none()
            && self.exact.is_none()
            && self.multi.is_none()
    }

    fn slot(&mut self, slot: Slot) -> &mut Option<Box<Subscribers<K>>> {
        match slot {
            Slot::Exact => &mut self.exact,
            Slot::Multi => &mut self.multi,
        }
    }

    /// The subscriber set of `slot`, created if absent.
    fn subscribers_mut(&mut self, slot: Slot) -> &mut Subscribers<K> {
        self.slot(slot)
            .get_or_insert_with(|| Box::new(Subscribers::new()))
    }

    /// Removes `client`'s subscription from `slot`, dropping the set once it is empty.
    fn remove(&mut self, slot: Slot, share_group: Option<&str>, client: &K) -> bool {
        let entry = self.slot(slot);
        let Some(subscribers) = entry.as_deref_mut() else {
            return false;
        };
        let removed = subscribers.remove(share_group, client);
        if subscribers.is_empty() {
            *entry = None;
        }
        removed
    }
}

/// A pending step of the routing walk: `node` matched the topic up to byte `next_level`.
#[derive(Debug, Clone, Copy)]
struct Frame {
    node: NodeId,
    /// Start of the next topic level, `None` once every level matched.
    next_level: Option<usize>,
}

/// Scratch state reused by every [`SubscriptionTree::route`] call so routing does not
/// allocate once warmed up.
struct RouteScratch<K> {
    stack: Vec<Frame>,
    /// Client → index of its [`DeliveryKind::Direct`] entry in the output; only filled once a
    /// second matching subscriber set shows up (a single set has unique clients already).
    index: HashMap<K, usize>,
}

/// Topic filter → subscriber tree, generic over the subscriber key `K` (a session id).
///
/// See the [module docs](super) for the matching rules and invariants.
pub struct SubscriptionTree<K> {
    /// Node arena; `nodes[0]` is the root and always exists.
    nodes: Vec<Node<K>>,
    /// Arena slots of pruned nodes, reused before the arena grows.
    free: Vec<NodeId>,
    /// Per-client copy of its subscriptions (filter as subscribed → options), for listing and
    /// removal. Kept in step with the trie; a client with no subscription has no entry.
    clients: HashMap<K, BTreeMap<Box<str>, SubscriptionOptions>>,
    /// Number of subscriptions across all clients.
    len: usize,
    scratch: RouteScratch<K>,
}

impl<K: Clone + Eq + Hash> Default for SubscriptionTree<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash> SubscriptionTree<K> {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::new()],
            free: Vec::new(),
            clients: HashMap::new(),
            len: 0,
            scratch: RouteScratch {
                stack: Vec::new(),
                index: HashMap::new(),
            },
        }
    }

    /// Number of subscriptions held, over all clients.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no client has any subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `client`'s subscription to `filter`, or replaces the options of the one it has.
    ///
    /// `filter` is the filter as received, `$share/{group}/` prefix included.
    pub fn subscribe(
        &mut self,
        client: K,
        filter: &str,
        options: SubscriptionOptions,
    ) -> Result<SubscribeOutcome, RouterError> {
        let parsed = TopicFilter::parse(filter)?;
        if parsed.is_shared() && options.no_local {
            return Err(RouterError::NoLocalOnShared);
        }
        let (node, slot) = self.create_path(parsed.filter());
        let subscribers = self.node_mut(node).subscribers_mut(slot);
        let previous = match parsed.share_group() {
            None => subscribers.direct.insert(client.clone(), options),
            Some(group) => subscribers.insert_shared(filter, group, client.clone(), options),
        };
        self.clients
            .entry(client)
            .or_default()
            .insert(filter.into(), options);
        Ok(match previous {
            Some(previous) => SubscribeOutcome::Replaced { previous },
            None => {
                self.len += 1;
                SubscribeOutcome::New
            }
        })
    }

    /// Removes `client`'s subscription to `filter` (as subscribed, `$share/...` included).
    /// Returns whether it existed; an invalid filter never exists.
    pub fn unsubscribe(&mut self, client: &K, filter: &str) -> bool {
        let Entry::Occupied(mut entry) = self.clients.entry(client.clone()) else {
            return false;
        };
        if entry.get_mut().remove(filter).is_none() {
            return false;
        }
        if entry.get().is_empty() {
            entry.remove();
        }
        self.len -= 1;
        self.remove_from_trie(client, filter);
        true
    }

    /// Removes every subscription of `client` (session end). Returns how many there were.
    pub fn remove_client(&mut self, client: &K) -> usize {
        let Some(filters) = self.clients.remove(client) else {
            return 0;
        };
        for filter in filters.keys() {
            self.remove_from_trie(client, filter);
        }
        self.len -= filters.len();
        filters.len()
    }

    /// `client`'s subscriptions, ordered by filter (to persist or inspect a session).
    pub fn subscriptions_of(&self, client: &K) -> impl Iterator<Item = Subscription<'_>> + '_ {
        self.clients
            .get(client)
            .into_iter()
            .flat_map(|filters| filters.iter())
            .map(|(filter, options)| Subscription {
                filter,
                options: *options,
            })
    }

    /// Computes who receives a message published to `topic` by `publisher`, into `out`
    /// (cleared first).
    ///
    /// Each client appears at most once as [`DeliveryKind::Direct`] (overlapping subscriptions
    /// merged, see the module docs) and once per matching share group as
    /// [`DeliveryKind::Shared`]. Share groups pick a member round-robin, preferring members for
    /// which `is_online` is true; with nobody online the message goes to the next member in
    /// turn (its persistent session queues it). `no_local` subscriptions skip `publisher`.
    pub fn route(
        &mut self,
        topic: &str,
        publisher: &K,
        is_online: &dyn Fn(&K) -> bool,
        out: &mut Vec<Delivery<K>>,
    ) {
        out.clear();
        let Self { nodes, scratch, .. } = self;
        let mut merge = Merge {
            index: &mut scratch.index,
            direct_sets: 0,
        };
        merge.index.clear();
        let stack = &mut scratch.stack;
        stack.clear();
        stack.push(Frame {
            node: ROOT,
            next_level: Some(0),
        });
        let wildcards_at_root = !is_dollar_topic(topic);
        while let Some(frame) = stack.pop() {
            let Some(node) = nodes.get_mut(frame.node.0) else {
                continue;
            };
            let Some(pos) = frame.next_level else {
                // Every level matched: filters ending here, and `here/#` (which matches its
                // parent level too).
                for subscribers in [&mut node.exact, &mut node.multi].into_iter().flatten() {
                    merge.collect(subscribers, publisher, is_online, out);
                }
                continue;
            };
            let (level, next_level) = level_at(topic, pos);
            if frame.node != ROOT || wildcards_at_root {
                if let Some(subscribers) = node.multi.as_deref_mut() {
                    merge.collect(subscribers, publisher, is_online, out);
                }
                if let Some(single) = node.single {
                    stack.push(Frame {
                        node: single,
                        next_level,
                    });
                }
            }
            if let Some(&child) = node.children.get(level) {
                stack.push(Frame {
                    node: child,
                    next_level,
                });
            }
        }
        merge.index.clear();
    }

    /// Another member for a message of the shared subscription `share` (as subscribed,
    /// `$share/{group}/{filter}`) whose member's session ended before it was delivered: the
    /// next online member in the group's round-robin. `None` when the subscription is gone or
    /// none of its members is online (MQTT 5.0 §4.8.2: the server SHOULD send it to another
    /// subscribing client).
    pub fn redeliver_shared(
        &mut self,
        share: &str,
        is_online: &dyn Fn(&K) -> bool,
    ) -> Option<Delivery<K>> {
        let parsed = TopicFilter::parse(share).ok()?;
        let name = parsed.share_group()?;
        let (node, slot) = self.find_path(parsed.filter(), |_, _| {})?;
        let subscribers = self.nodes.get_mut(node.0)?.slot(slot).as_deref_mut()?;
        let group = subscribers.shared.iter_mut().find(|g| &*g.name == name)?;
        let share = Arc::clone(&group.share);
        group
            .pick_online(is_online)
            .map(|member| Delivery::shared(member, share))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node<K> {
        // Ids come only from `alloc` and are unlinked before their slot is freed, so they
        // always index the arena.
        &mut self.nodes[id.0]
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

    /// Walks `filter` (validated, no share prefix) from the root, creating missing nodes.
    fn create_path(&mut self, filter: &str) -> (NodeId, Slot) {
        let mut node = ROOT;
        for level in filter.split('/') {
            if level == MULTI_LEVEL {
                return (node, Slot::Multi);
            }
            let existing = if level == SINGLE_LEVEL {
                self.node_mut(node).single
            } else {
                self.node_mut(node).children.get(level).copied()
            };
            node = match existing {
                Some(child) => child,
                None => {
                    let child = self.alloc();
                    let parent = self.node_mut(node);
                    if level == SINGLE_LEVEL {
                        parent.single = Some(child);
                    } else {
                        parent.children.insert(level.into(), child);
                    }
                    child
                }
            };
        }
        (node, Slot::Exact)
    }

    /// Walks `filter` (validated, no share prefix) from the root without creating nodes:
    /// where its subscribers are, or `None` if no subscription reaches that far. `step` sees
    /// each parent passed and the link taken from it, root first.
    fn find_path<'f>(
        &self,
        filter: &'f str,
        mut step: impl FnMut(NodeId, Link<'f>),
    ) -> Option<(NodeId, Slot)> {
        let mut node = ROOT;
        for level in filter.split('/') {
            if level == MULTI_LEVEL {
                return Some((node, Slot::Multi));
            }
            let current = self.nodes.get(node.0)?;
            let (child, link) = if level == SINGLE_LEVEL {
                (current.single, Link::SingleLevelWildcard)
            } else {
                (current.children.get(level).copied(), Link::Level(level))
            };
            let child = child?;
            step(node, link);
            node = child;
        }
        Some((node, Slot::Exact))
    }

    /// Removes the trie entry for (`client`, `filter`) and prunes nodes left empty.
    fn remove_from_trie(&mut self, client: &K, filter: &str) {
        let Ok(parsed) = TopicFilter::parse(filter) else {
            return;
        };
        let mut path: Vec<(NodeId, Link<'_>)> = Vec::new();
        let Some((mut node, slot)) =
            self.find_path(parsed.filter(), |parent, link| path.push((parent, link)))
        else {
            return;
        };
        if !self
            .node_mut(node)
            .remove(slot, parsed.share_group(), client)
        {
            return;
        }
        // Prune: unlink and free each empty node, deepest first, never the root.
        for (parent, link) in path.into_iter().rev() {
            if !self.node_mut(node).is_empty() {
                break;
            }
            let parent_node = self.node_mut(parent);
            match link {
                Link::Level(level) => {
                    parent_node.children.remove(level);
                }
                Link::SingleLevelWildcard => parent_node.single = None,
            }
            *self.node_mut(node) = Node::new();
            self.free.push(node);
            node = parent;
        }
    }

    /// Number of nodes in use, root included (for tests of the pruning invariant).
    #[cfg(test)]
    fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

/// Accumulates deliveries for one `route` call, merging a client's overlapping ordinary
/// subscriptions.
struct Merge<'s, K> {
    index: &'s mut HashMap<K, usize>,
    /// Non-empty ordinary subscriber sets seen so far in this call.
    direct_sets: usize,
}

impl<K: Clone + Eq + Hash> Merge<'_, K> {
    fn collect(
        &mut self,
        subscribers: &mut Subscribers<K>,
        publisher: &K,
        is_online: &dyn Fn(&K) -> bool,
        out: &mut Vec<Delivery<K>>,
    ) {
        if !subscribers.direct.is_empty() {
            self.collect_direct(&subscribers.direct, publisher, out);
        }
        for group in &mut subscribers.shared {
            let share = Arc::clone(&group.share);
            if let Some(member) = group.pick(is_online) {
                out.push(Delivery::shared(member, share));
            }
        }
    }

    fn collect_direct(
        &mut self,
        direct: &HashMap<K, SubscriptionOptions>,
        publisher: &K,
        out: &mut Vec<Delivery<K>>,
    ) {
        let wanted = direct
            .iter()
            .filter(|(client, options)| !(options.no_local && *client == publisher));
        self.direct_sets += 1;
        if self.direct_sets == 1 {
            // Keys of one map are distinct: nothing to merge yet.
            out.extend(wanted.map(|(client, options)| {
                Delivery::new(client.clone(), options, DeliveryKind::Direct)
            }));
            return;
        }
        if self.direct_sets == 2 {
            for (i, delivery) in out.iter().enumerate() {
                if delivery.kind == DeliveryKind::Direct {
                    self.index.insert(delivery.client.clone(), i);
                }
            }
        }
        for (client, options) in wanted {
            match self.index.get(client).and_then(|&i| out.get_mut(i)) {
                Some(delivery) => delivery.merge(options),
                None => {
                    self.index.insert(client.clone(), out.len());
                    out.push(Delivery::new(client.clone(), options, DeliveryKind::Direct));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::router::MAX_FILTER_LEVELS;

    type Tree = SubscriptionTree<&'static str>;

    const NOBODY: &str = "nobody";

    fn qos(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    fn with_id(qos: QoS, id: u32) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            identifier: NonZeroU32::new(id),
            ..SubscriptionOptions::default()
        }
    }

    fn online(_: &&'static str) -> bool {
        true
    }

    fn tree(subs: &[(&'static str, &str)]) -> Tree {
        let mut tree = Tree::new();
        for &(client, filter) in subs {
            tree.subscribe(client, filter, qos(QoS::AtMostOnce))
                .unwrap_or_else(|e| panic!("{filter}: {e}"));
        }
        tree
    }

    /// Deliveries for `topic` published by `publisher`, everyone online, sorted by client.
    fn route_from(
        tree: &mut Tree,
        topic: &str,
        publisher: &'static str,
    ) -> Vec<Delivery<&'static str>> {
        let mut out = Vec::new();
        tree.route(topic, &publisher, &online, &mut out);
        out.sort_by(|a, b| a.client.cmp(b.client));
        out
    }

    /// Receiving clients for `topic`, sorted.
    fn receivers(tree: &mut Tree, topic: &str) -> Vec<&'static str> {
        route_from(tree, topic, NOBODY)
            .into_iter()
            .map(|d| d.client)
            .collect()
    }

    fn ids(delivery: &Delivery<&str>) -> Vec<u32> {
        let mut ids: Vec<u32> = delivery.identifiers.iter().map(NonZeroU32::get).collect();
        ids.sort_unstable();
        ids
    }

    /// Each shared delivery names its subscription, and `redeliver_shared` finds the same
    /// group again by that name: the next online member, or nobody.
    #[test]
    fn redelivery_picks_another_online_member_of_the_same_share() {
        for filter in ["$share/g/a/+/c", "$share/g/#", "$share/g/a/b/c"] {
            let mut t = tree(&[("m1", filter), ("m2", filter), ("other", "$share/h/a/#")]);
            let shares: Vec<Option<Arc<str>>> = route_from(&mut t, "a/b/c", NOBODY)
                .into_iter()
                .filter(|d| d.client != "other")
                .map(|d| d.share)
                .collect();
            assert_eq!(shares, [Some(Arc::from(filter))], "{filter}");
            let only_m2 = |c: &&'static str| *c == "m2";
            for _ in 0..3 {
                let d = t.redeliver_shared(filter, &only_m2).expect("m2 is online");
                assert_eq!((d.client, d.share.as_deref()), ("m2", Some(filter)));
            }
            assert!(t.redeliver_shared(filter, &|_| false).is_none(), "{filter}");
            assert!(t.redeliver_shared("$share/x/a/b/c", &online).is_none());
            assert!(
                t.redeliver_shared("a/b/c", &online).is_none(),
                "not a share"
            );
            t.remove_client(&"m1");
            t.remove_client(&"m2");
            assert!(t.redeliver_shared(filter, &online).is_none(), "group gone");
        }
    }

    #[test]
    fn exact_filter_matches_only_its_topic() {
        let mut t = tree(&[("c", "sensors/t1/temp")]);
        assert_eq!(receivers(&mut t, "sensors/t1/temp"), ["c"]);
        for topic in [
            "sensors/t1",
            "sensors/t1/temp/x",
            "sensors/t2/temp",
            "Sensors/t1/temp",
        ] {
            assert!(receivers(&mut t, topic).is_empty(), "{topic}");
        }
    }

    #[test]
    fn single_level_wildcard_matches_exactly_one_level() {
        let mut t = tree(&[("a", "a/+"), ("b", "+/x"), ("c", "+/+")]);
        assert_eq!(receivers(&mut t, "a/b"), ["a", "c"]);
        assert_eq!(receivers(&mut t, "a/"), ["a", "c"]);
        assert_eq!(receivers(&mut t, "q/x"), ["b", "c"]);
        assert_eq!(receivers(&mut t, "/x"), ["b", "c"]);
        assert!(receivers(&mut t, "a").is_empty());
        assert!(receivers(&mut t, "a/b/c").is_empty());
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_all_descendants() {
        let mut t = tree(&[("a", "a/#"), ("all", "#"), ("ab", "a/+/#")]);
        assert_eq!(receivers(&mut t, "a"), ["a", "all"]);
        assert_eq!(receivers(&mut t, "a/b"), ["a", "ab", "all"]);
        assert_eq!(receivers(&mut t, "a/b/c/d"), ["a", "ab", "all"]);
        assert_eq!(receivers(&mut t, "ab"), ["all"]);
        assert_eq!(receivers(&mut t, "/a"), ["all"]);
    }

    #[test]
    fn empty_levels_are_ordinary_levels() {
        let mut t = tree(&[
            ("ab", "a//b"),
            ("lead", "/a"),
            ("plus", "a/+/b"),
            ("root", "/"),
        ]);
        assert_eq!(receivers(&mut t, "a//b"), ["ab", "plus"]);
        assert!(receivers(&mut t, "a/b").is_empty());
        assert_eq!(receivers(&mut t, "/a"), ["lead"]);
        assert!(receivers(&mut t, "a").is_empty());
        assert_eq!(receivers(&mut t, "/"), ["root"]);
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        let mut t = tree(&[
            ("all", "#"),
            ("plus", "+/info"),
            ("sys", "$SYS/#"),
            ("sysplus", "$SYS/+"),
            ("shared", "$share/g/#"),
        ]);
        assert_eq!(receivers(&mut t, "$SYS/info"), ["sys", "sysplus"]);
        // A `$` in a later level is an ordinary character.
        assert_eq!(receivers(&mut t, "a/$x"), ["all", "shared"]);
        assert_eq!(receivers(&mut t, "x/info"), ["all", "plus", "shared"]);
    }

    #[test]
    fn overlapping_subscriptions_deliver_one_copy_with_max_qos_and_all_identifiers() {
        let mut t = Tree::new();
        t.subscribe("c", "a/+", with_id(QoS::AtMostOnce, 1))
            .unwrap();
        t.subscribe("c", "a/b", with_id(QoS::ExactlyOnce, 2))
            .unwrap();
        let rap = SubscriptionOptions {
            retain_as_published: true,
            ..qos(QoS::AtLeastOnce)
        };
        t.subscribe("c", "#", rap).unwrap();
        t.subscribe("d", "a/b", qos(QoS::AtMostOnce)).unwrap();
        let out = route_from(&mut t, "a/b", NOBODY);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].client, "c");
        assert_eq!(out[0].kind, DeliveryKind::Direct);
        assert_eq!(out[0].qos, QoS::ExactlyOnce);
        assert!(out[0].retain_as_published);
        assert_eq!(ids(&out[0]), [1, 2]);
        assert_eq!(out[1].client, "d");
        assert_eq!(out[1].qos, QoS::AtMostOnce);
        assert!(!out[1].retain_as_published);
        assert!(out[1].identifiers.is_empty());
    }

    #[test]
    fn repeated_identifiers_are_delivered_once() {
        let mut t = Tree::new();
        t.subscribe("c", "a/+", with_id(QoS::AtMostOnce, 7))
            .unwrap();
        t.subscribe("c", "a/#", with_id(QoS::AtMostOnce, 7))
            .unwrap();
        t.subscribe("c", "+/b", with_id(QoS::AtMostOnce, 9))
            .unwrap();
        let out = route_from(&mut t, "a/b", NOBODY);
        assert_eq!(out.len(), 1);
        assert_eq!(ids(&out[0]), [7, 9]);
        assert_eq!(out[0].identifiers.len(), 2);
    }

    #[test]
    fn no_local_skips_only_the_publisher() {
        let no_local = SubscriptionOptions {
            no_local: true,
            ..qos(QoS::AtLeastOnce)
        };
        let mut t = Tree::new();
        t.subscribe("pub", "a/b", no_local).unwrap();
        t.subscribe("other", "a/b", no_local).unwrap();
        assert_eq!(
            route_from(&mut t, "a/b", "pub")
                .iter()
                .map(|d| d.client)
                .collect::<Vec<_>>(),
            ["other"]
        );
        // A matching subscription without no_local still delivers, with its own options.
        t.subscribe("pub", "a/#", with_id(QoS::AtMostOnce, 3))
            .unwrap();
        let out = route_from(&mut t, "a/b", "pub");
        let own: Vec<_> = out.iter().filter(|d| d.client == "pub").collect();
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].qos, QoS::AtMostOnce);
        assert_eq!(ids(own[0]), [3]);
    }

    #[test]
    fn resubscribing_replaces_options() {
        let mut t = Tree::new();
        let first = t.subscribe("c", "a/b", qos(QoS::ExactlyOnce)).unwrap();
        assert!(first.is_new());
        let again = t.subscribe("c", "a/b", qos(QoS::AtMostOnce)).unwrap();
        assert_eq!(
            again,
            SubscribeOutcome::Replaced {
                previous: qos(QoS::ExactlyOnce)
            }
        );
        assert_eq!(t.len(), 1);
        let out = route_from(&mut t, "a/b", NOBODY);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].qos, QoS::AtMostOnce);
        let listed: Vec<_> = t.subscriptions_of(&"c").collect();
        assert_eq!(
            listed,
            [Subscription {
                filter: "a/b",
                options: qos(QoS::AtMostOnce)
            }]
        );
    }

    #[test]
    fn unsubscribe_stops_delivery_and_reports_existence() {
        let mut t = tree(&[("c", "a/+"), ("c", "a/b"), ("d", "a/+")]);
        assert!(t.unsubscribe(&"c", "a/+"));
        assert!(!t.unsubscribe(&"c", "a/+"));
        assert!(!t.unsubscribe(&"c", "a/#/b"));
        assert!(!t.unsubscribe(&"unknown", "a/b"));
        assert_eq!(receivers(&mut t, "a/x"), ["d"]);
        assert_eq!(receivers(&mut t, "a/b"), ["c", "d"]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn unsubscribing_everything_prunes_every_node() {
        let filters = [
            "a/b/c",
            "a/+/c",
            "a/#",
            "#",
            "+",
            "a//b",
            "$SYS/x",
            "$share/g/a/b/c",
        ];
        let mut t = Tree::new();
        for filter in filters {
            t.subscribe("c", filter, qos(QoS::AtMostOnce)).unwrap();
            t.subscribe("d", filter, qos(QoS::AtMostOnce)).unwrap();
        }
        for filter in filters {
            assert!(t.unsubscribe(&"c", filter), "{filter}");
        }
        // d's subscriptions keep their nodes alive.
        assert_eq!(receivers(&mut t, "a/b/c"), ["d", "d"]);
        for filter in filters {
            assert!(t.unsubscribe(&"d", filter), "{filter}");
        }
        assert!(t.is_empty());
        assert_eq!(t.live_nodes(), 1);
    }

    #[test]
    fn remove_client_removes_all_its_subscriptions_and_nodes() {
        let mut t = tree(&[("keep", "x/y")]);
        let baseline = t.live_nodes();
        for filter in [
            "a/b",
            "a/+/c",
            "a/#",
            "#",
            "deep/er/still",
            "$share/g/a/b",
            "$share/h/#",
        ] {
            t.subscribe("gone", filter, qos(QoS::AtLeastOnce)).unwrap();
        }
        assert_eq!(t.remove_client(&"gone"), 7);
        assert_eq!(t.remove_client(&"gone"), 0);
        assert_eq!(t.subscriptions_of(&"gone").count(), 0);
        assert_eq!(t.len(), 1);
        assert_eq!(t.live_nodes(), baseline);
        assert!(receivers(&mut t, "a/b").is_empty());
        assert_eq!(receivers(&mut t, "x/y"), ["keep"]);
    }

    #[test]
    fn freed_nodes_are_reused() {
        let mut t = Tree::new();
        t.subscribe("c", "a/b/c", qos(QoS::AtMostOnce)).unwrap();
        t.remove_client(&"c");
        let arena = t.nodes.len();
        t.subscribe("c", "x/y/z", qos(QoS::AtMostOnce)).unwrap();
        assert_eq!(t.nodes.len(), arena);
        assert_eq!(receivers(&mut t, "x/y/z"), ["c"]);
    }

    #[test]
    fn subscriptions_of_lists_filters_as_subscribed() {
        let mut t = Tree::new();
        t.subscribe("c", "b/#", with_id(QoS::AtLeastOnce, 4))
            .unwrap();
        t.subscribe("c", "$share/g/a", qos(QoS::ExactlyOnce))
            .unwrap();
        t.subscribe("d", "z", qos(QoS::AtMostOnce)).unwrap();
        let listed: Vec<_> = t.subscriptions_of(&"c").collect();
        assert_eq!(
            listed,
            [
                Subscription {
                    filter: "$share/g/a",
                    options: qos(QoS::ExactlyOnce)
                },
                Subscription {
                    filter: "b/#",
                    options: with_id(QoS::AtLeastOnce, 4)
                },
            ]
        );
    }

    /// Who receives each of `n` messages to `topic` from `publisher`, with `is_online`.
    fn shared_sequence(
        t: &mut Tree,
        topic: &str,
        n: usize,
        is_online: &dyn Fn(&&'static str) -> bool,
    ) -> Vec<&'static str> {
        let mut out = Vec::new();
        (0..n)
            .map(|_| {
                t.route(topic, &NOBODY, is_online, &mut out);
                assert_eq!(out.len(), 1, "one delivery per message");
                assert_eq!(out[0].kind, DeliveryKind::Shared);
                out[0].client
            })
            .collect()
    }

    #[test]
    fn shared_group_delivers_each_message_to_one_member_in_turn() {
        let mut t = tree(&[
            ("a", "$share/g/jobs/+"),
            ("b", "$share/g/jobs/+"),
            ("c", "$share/g/jobs/+"),
        ]);
        assert_eq!(
            shared_sequence(&mut t, "jobs/1", 6, &online),
            ["a", "b", "c", "a", "b", "c"]
        );
    }

    #[test]
    fn shared_group_prefers_online_members() {
        let mut t = tree(&[
            ("a", "$share/g/jobs"),
            ("b", "$share/g/jobs"),
            ("c", "$share/g/jobs"),
        ]);
        let b_offline = |c: &&'static str| *c != "b";
        assert_eq!(
            shared_sequence(&mut t, "jobs", 4, &b_offline),
            ["a", "c", "a", "c"]
        );
        let nobody_online = |_: &&'static str| false;
        assert_eq!(
            shared_sequence(&mut t, "jobs", 3, &nobody_online),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn leaving_a_share_group_keeps_the_rotation() {
        let mut t = tree(&[
            ("a", "$share/g/j"),
            ("b", "$share/g/j"),
            ("c", "$share/g/j"),
        ]);
        assert_eq!(shared_sequence(&mut t, "j", 2, &online), ["a", "b"]);
        assert!(t.unsubscribe(&"a", "$share/g/j"));
        assert_eq!(shared_sequence(&mut t, "j", 3, &online), ["c", "b", "c"]);
        assert!(t.unsubscribe(&"c", "$share/g/j"));
        assert_eq!(shared_sequence(&mut t, "j", 2, &online), ["b", "b"]);
        assert!(t.unsubscribe(&"b", "$share/g/j"));
        assert!(receivers(&mut t, "j").is_empty());
        assert_eq!(t.live_nodes(), 1);
    }

    #[test]
    fn shared_and_ordinary_subscriptions_deliver_independently() {
        let mut t = Tree::new();
        t.subscribe("c", "a/b", qos(QoS::AtMostOnce)).unwrap();
        t.subscribe("c", "$share/g/a/+", with_id(QoS::AtLeastOnce, 5))
            .unwrap();
        let out = route_from(&mut t, "a/b", NOBODY);
        assert_eq!(out.len(), 2);
        let direct = out.iter().find(|d| d.kind == DeliveryKind::Direct).unwrap();
        let shared = out.iter().find(|d| d.kind == DeliveryKind::Shared).unwrap();
        assert_eq!((direct.client, direct.qos), ("c", QoS::AtMostOnce));
        assert!(direct.identifiers.is_empty());
        assert_eq!((shared.client, shared.qos), ("c", QoS::AtLeastOnce));
        assert_eq!(ids(shared), [5]);
    }

    #[test]
    fn each_group_and_filter_pair_is_its_own_share_group() {
        let mut t = tree(&[
            ("a", "$share/g/a/b"),
            ("b", "$share/h/a/b"),
            ("c", "$share/g/a/+"),
            ("d", "$share/g/a/+"),
        ]);
        let out = route_from(&mut t, "a/b", NOBODY);
        assert!(out.iter().all(|d| d.kind == DeliveryKind::Shared));
        assert_eq!(
            out.iter().map(|d| d.client).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn invalid_subscriptions_are_rejected_and_leave_no_trace() {
        let mut t = Tree::new();
        let no_local = SubscriptionOptions {
            no_local: true,
            ..SubscriptionOptions::default()
        };
        let err = t.subscribe("c", "$share/g/a", no_local).unwrap_err();
        assert_eq!(err, RouterError::NoLocalOnShared);
        assert!(err.is_protocol_error());
        for (filter, expected) in [
            ("", RouterError::EmptyFilter),
            ("a/#/b", RouterError::MultiLevelWildcardNotLast),
            ("a/b+", RouterError::WildcardNotAlone),
            ("$share//a", RouterError::EmptyShareGroup),
            ("$share/g", RouterError::MissingSharedFilter),
        ] {
            let err = t.subscribe("c", filter, SubscriptionOptions::default());
            assert_eq!(err, Err(expected), "{filter}");
            assert!(!expected.is_protocol_error());
        }
        assert!(t.is_empty());
        assert_eq!(t.subscriptions_of(&"c").count(), 0);
        assert_eq!(t.live_nodes(), 1);
    }

    #[test]
    fn deep_topics_route_and_over_deep_filters_are_refused() {
        let deepest = "/".repeat(MAX_FILTER_LEVELS - 1);
        let mut t = Tree::new();
        t.subscribe("c", &format!("{deepest}#"), qos(QoS::AtMostOnce))
            .unwrap();
        t.subscribe("d", &deepest, qos(QoS::AtMostOnce)).unwrap();
        t.subscribe("all", "#", qos(QoS::AtMostOnce)).unwrap();
        assert_eq!(
            t.subscribe("e", &format!("{deepest}/"), qos(QoS::AtMostOnce)),
            Err(RouterError::TooManyLevels {
                max: MAX_FILTER_LEVELS
            })
        );
        assert_eq!(receivers(&mut t, &deepest), ["all", "c", "d"]);
        // Topics are not limited here: a very deep topic walks only as deep as the trie.
        let very_deep = "/".repeat(200_000);
        assert_eq!(receivers(&mut t, &very_deep), ["all", "c"]);
        t.remove_client(&"c");
        t.remove_client(&"d");
        t.remove_client(&"all");
        assert_eq!(t.live_nodes(), 1);
    }

    #[test]
    fn route_replaces_the_output_contents() {
        let mut t = tree(&[("c", "a")]);
        let mut out = Vec::new();
        t.route("a", &NOBODY, &online, &mut out);
        t.route("a", &NOBODY, &online, &mut out);
        assert_eq!(out.len(), 1);
        t.route("b", &NOBODY, &online, &mut out);
        assert!(out.is_empty());
    }

    // ---- model-based property test ----

    /// Reference matcher straight from the specification's wording, level by level.
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

    /// What a client should receive through its ordinary subscriptions.
    #[derive(Debug, PartialEq, Eq)]
    struct Expected {
        qos: QoS,
        retain_as_published: bool,
        identifiers: BTreeSet<u32>,
    }

    /// Valid filters over a small alphabet, so that collisions and overlaps are common.
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

    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "", "$s"]);
        prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
    }

    fn options_strategy() -> impl Strategy<Value = SubscriptionOptions> {
        (0u8..3, any::<bool>(), any::<bool>(), 0u32..4).prop_map(|(q, nl, rap, id)| {
            SubscriptionOptions {
                qos: QoS::from_u8(q).unwrap_or_default(),
                no_local: nl,
                retain_as_published: rap,
                retain_handling: RetainHandling::SendAlways,
                identifier: NonZeroU32::new(id),
            }
        })
    }

    const CLIENTS: [&str; 4] = ["c0", "c1", "c2", "c3"];

    proptest! {
        /// Property: for any set of subscriptions (ordinary and shared) and any topic and
        /// publisher, `route` delivers to exactly the clients the level-by-level model
        /// matcher selects (minus no-local self deliveries), once each, with the maximum QoS,
        /// the union of identifiers and the OR of retain-as-published over the matching
        /// subscriptions; a share group with any matching member yields exactly one delivery.
        /// Removing every subscription afterwards leaves only the root node.
        #[test]
        fn route_agrees_with_the_model(
            subs in prop::collection::vec(
                (0usize..4, filter_strategy(), options_strategy(), prop::option::of(0u8..2)),
                0..24,
            ),
            topics in prop::collection::vec(topic_strategy(), 1..8),
            publisher in 0usize..4,
        ) {
            let mut tree = Tree::new();
            // (client, raw filter) → options; the last subscribe wins.
            let mut model: BTreeMap<(&str, String), SubscriptionOptions> = BTreeMap::new();
            for (client, filter, mut options, share) in subs {
                let client = CLIENTS[client];
                let raw = match share {
                    Some(group) => {
                        options.no_local = false;
                        format!("$share/g{group}/{filter}")
                    }
                    None => filter,
                };
                tree.subscribe(client, &raw, options).unwrap();
                model.insert((client, raw), options);
            }
            prop_assert_eq!(tree.len(), model.len());
            let publisher = CLIENTS[publisher];
            let mut out = Vec::new();
            for topic in &topics {
                tree.route(topic, &publisher, &online, &mut out);
                let mut expected: BTreeMap<&str, Expected> = BTreeMap::new();
                let mut groups: BTreeSet<&str> = BTreeSet::new();
                for ((client, raw), options) in &model {
                    if let Some(rest) = raw.strip_prefix("$share/") {
                        let (_group, filter) = rest.split_once('/').unwrap();
                        if model_matches(filter, topic) {
                            // Keyed by group and filter: each pair is one share group.
                            groups.insert(rest);
                        }
                        continue;
                    }
                    if !model_matches(raw, topic) || (options.no_local && *client == publisher) {
                        continue;
                    }
                    let entry = expected.entry(client).or_insert(Expected {
                        qos: QoS::AtMostOnce,
                        retain_as_published: false,
                        identifiers: BTreeSet::new(),
                    });
                    entry.qos = entry.qos.max(options.qos);
                    entry.retain_as_published |= options.retain_as_published;
                    entry.identifiers.extend(options.identifier.map(NonZeroU32::get));
                }
                let mut actual: BTreeMap<&str, Expected> = BTreeMap::new();
                let mut shared = 0;
                for delivery in &out {
                    match delivery.kind {
                        DeliveryKind::Shared => shared += 1,
                        DeliveryKind::Direct => {
                            let previous = actual.insert(delivery.client, Expected {
                                qos: delivery.qos,
                                retain_as_published: delivery.retain_as_published,
                                identifiers: delivery.identifiers.iter().map(NonZeroU32::get).collect(),
                            });
                            prop_assert!(previous.is_none(), "two direct deliveries to {}", delivery.client);
                        }
                    }
                }
                prop_assert_eq!(actual, expected, "topic {:?}", topic);
                prop_assert_eq!(shared, groups.len(), "topic {:?}", topic);
            }
            for client in CLIENTS {
                tree.remove_client(&client);
            }
            prop_assert!(tree.is_empty());
            prop_assert_eq!(tree.live_nodes(), 1);
        }
    }
}
