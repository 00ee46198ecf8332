//! Access control lists: the ACL file, and its rules compiled for one client.
//!
//! File syntax (one directive a line; a line starting with `#` is a comment, and `#` after a
//! directive belongs to it, as in `topic read #`):
//!
//! ```text
//! # Rules before any `user`/`client` line apply to anonymous clients (no username).
//! topic read public/#
//!
//! # Rules below apply to the client with username alice.
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret/#
//!
//! # Rules below apply to the client with client id gw-17.
//! client gw-17
//! topic write telemetry/gw-17/#
//!
//! # Back to rules for anonymous clients.
//! anonymous
//! topic read status/#
//!
//! # `pattern` rules apply to every client, wherever they stand; %u is the username,
//! # %c the client id.
//! pattern readwrite devices/%c/#
//! pattern read users/%u/inbox
//! ```
//!
//! Access is `read` (subscribe and receive), `write` (publish), `readwrite` (both; also
//! the default when the word is left out) or `deny` (neither, and it beats every grant).
//! A topic is allowed when no `deny` rule matches it and some grant with the needed access
//! does; with an ACL file, anything not granted is denied. Filters use MQTT wildcards with
//! MQTT matching (`#` does not match `$SYS/...`).
//!
//! A SUBSCRIBE filter is granted when it is not entirely inside a `deny` rule and overlaps
//! some `read` grant; every delivery is checked again against the read rules, so a client
//! subscribed to `#` receives only the topics it may read (retained messages included).
//!
//! A `pattern` rule whose `%u`/`%c` value is missing (anonymous client) or contains `/`,
//! `+` or `#` is skipped for that client, so a crafted username cannot widen its rights.
//!
//! Rules are compiled once per client at CONNECT ([`ClientAcl::compile`]); checking a topic
//! walks its levels without allocating.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe and receive.
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Neither; beats every grant.
    Deny,
}

impl Access {
    fn grants(self, op: Operation) -> bool {
        matches!(
            (self, op),
            (Self::ReadWrite, _) | (Self::Read, Operation::Read) | (Self::Write, Operation::Write)
        )
    }

    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "read" => Self::Read,
            "write" => Self::Write,
            "readwrite" => Self::ReadWrite,
            "deny" => Self::Deny,
            _ => return None,
        })
    }
}

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Receive messages (delivery, retained) or subscribe.
    Read,
    /// Publish (including its will).
    Write,
}

impl Operation {
    /// Name for log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// One rule as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    clients: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// Why an ACL file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// A line is not a valid directive.
    #[error("{path}:{line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Which section `topic` lines currently belong to.
enum Section {
    Anonymous,
    User(String),
    Client(String),
}

impl AclFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| AclError::Syntax {
            path: path.to_path_buf(),
            line,
            reason,
        })
    }

    /// Parses the text of an ACL file; `(line, reason)` on failure.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut acl = Self::default();
        let mut section = Section::Anonymous;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" | "client" => {
                    if rest.is_empty() {
                        return Err((line_no, format!("`{keyword}` needs a name")));
                    }
                    section = if keyword == "user" {
                        Section::User(rest.to_owned())
                    } else {
                        Section::Client(rest.to_owned())
                    };
                }
                "anonymous" => {
                    if !rest.is_empty() {
                        return Err((line_no, "`anonymous` takes no argument".into()));
                    }
                    section = Section::Anonymous;
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest, keyword == "pattern").map_err(|r| (line_no, r))?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        match &section {
                            Section::Anonymous => acl.anonymous.push(rule),
                            Section::User(name) => {
                                acl.users.entry(name.clone()).or_default().push(rule);
                            }
                            Section::Client(id) => {
                                acl.clients.entry(id.clone()).or_default().push(rule);
                            }
                        }
                    }
                }
                other => {
                    return Err((
                        line_no,
                        format!(
                            "unknown directive `{other}` (expected topic, pattern, user, \
                             client or anonymous)"
                        ),
                    ));
                }
            }
        }
        Ok(acl)
    }

    /// Number of rules, for log lines.
    pub fn rule_count(&self) -> usize {
        self.anonymous.len()
            + self.patterns.len()
            + self.users.values().map(Vec::len).sum::<usize>()
            + self.clients.values().map(Vec::len).sum::<usize>()
    }
}

fn parse_rule(rest: &str, is_pattern: bool) -> Result<Rule, String> {
    let (access, filter) = match rest.split_once(char::is_whitespace) {
        Some((word, filter)) if Access::parse(word).is_some() => {
            (Access::parse(word).unwrap_or(Access::Deny), filter.trim())
        }
        _ => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("missing topic filter".into());
    }
    if !is_pattern && (filter.contains("%u") || filter.contains("%c")) {
        return Err(format!(
            "{filter:?}: %u/%c are substituted in `pattern` lines only"
        ));
    }
    // Placeholders stand for one plain level part; check the filter with a stand-in.
    let probe = filter.replace("%u", "u").replace("%c", "c");
    tern_mqtt::topic::validate_topic_filter(&probe)
        .map_err(|err| format!("invalid topic filter {filter:?}: {err}"))?;
    Ok(Rule {
        access,
        filter: filter.to_owned(),
    })
}

/// One level of a compiled filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(Box<str>),
    Single,
    Multi,
}

impl Level {
    fn is_wildcard(&self) -> bool {
        !matches!(self, Self::Exact(_))
    }

    fn is_dollar(&self) -> bool {
        matches!(self, Self::Exact(s) if s.starts_with('$'))
    }
}

fn levels(filter: &str) -> Vec<Level> {
    filter
        .split('/')
        .map(|part| match part {
            "+" => Level::Single,
            "#" => Level::Multi,
            other => Level::Exact(other.into()),
        })
        .collect()
}

/// A rule with its placeholders substituted, split into levels.
#[derive(Debug, Clone)]
struct CompiledRule {
    access: Access,
    /// The filter after substitution, for log lines.
    filter: Arc<str>,
    levels: Vec<Level>,
}

/// Outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allowed,
    /// Refused: by a `deny` rule (its filter), or because nothing grants it (`None`).
    Denied(Option<Arc<str>>),
}

impl Decision {
    /// Whether the operation may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed)
    }
}

/// The rules that apply to one client, compiled at CONNECT.
#[derive(Debug, Clone, Default)]
pub struct ClientAcl {
    rules: Vec<CompiledRule>,
}

/// Who a client is, for rule selection and substitution.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// Authenticated username (or certificate identity); `None` for anonymous clients.
    pub username: Option<&'a str>,
    /// Client identifier.
    pub client_id: &'a str,
}

impl ClientAcl {
    /// Selects and substitutes the rules of `file` that apply to `who`.
    pub fn compile(file: &AclFile, who: Principal<'_>) -> Self {
        let mut rules = Vec::new();
        let mut push = |rule: &Rule, filter: String| {
            rules.push(CompiledRule {
                access: rule.access,
                levels: levels(&filter),
                filter: filter.into(),
            });
        };
        let own = match who.username {
            Some(name) => file.users.get(name),
            None => Some(&file.anonymous),
        };
        for rule in own.into_iter().flatten() {
            push(rule, rule.filter.clone());
        }
        for rule in file.clients.get(who.client_id).into_iter().flatten() {
            push(rule, rule.filter.clone());
        }
        for rule in &file.patterns {
            if let Some(filter) = substitute(&rule.filter, who) {
                push(rule, filter);
            }
        }
        Self { rules }
    }

    /// Checks a topic name (publish, delivery, will). Does not allocate.
    pub fn check_topic(&self, topic: &str, op: Operation) -> Decision {
        let mut granted = false;
        for rule in &self.rules {
            if !topic_matches(&rule.levels, topic) {
                continue;
            }
            if rule.access == Access::Deny {
                return Decision::Denied(Some(Arc::clone(&rule.filter)));
            }
            granted |= rule.access.grants(op);
        }
        if granted {
            Decision::Allowed
        } else {
            Decision::Denied(None)
        }
    }

    /// Checks a SUBSCRIBE filter (shared subscriptions are checked on their topic filter).
    pub fn check_subscribe(&self, filter: &str) -> Decision {
        let filter = strip_share(filter);
        let wanted = levels(filter);
        let mut granted = false;
        for rule in &self.rules {
            if rule.access == Access::Deny {
                if is_subset(&wanted, &rule.levels) {
                    return Decision::Denied(Some(Arc::clone(&rule.filter)));
                }
            } else if rule.access.grants(Operation::Read) && overlaps(&wanted, &rule.levels) {
                granted = true;
            }
        }
        if granted {
            Decision::Allowed
        } else {
            Decision::Denied(None)
        }
    }
}

/// `$share/{group}/{filter}` → `{filter}`.
fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, real)| real)
}

fn substitute(filter: &str, who: Principal<'_>) -> Option<String> {
    let safe = |value: &str| !value.is_empty() && !value.contains(['/', '+', '#']);
    let mut out = filter.to_owned();
    if out.contains("%u") {
        let user = who.username.filter(|u| safe(u))?;
        out = out.replace("%u", user);
    }
    if out.contains("%c") {
        if !safe(who.client_id) {
            return None;
        }
        out = out.replace("%c", who.client_id);
    }
    Some(out)
}

/// MQTT topic matching of a topic name against a compiled filter.
fn topic_matches(filter: &[Level], topic: &str) -> bool {
    if topic.starts_with('$') && filter.first().is_some_and(Level::is_wildcard) {
        return false;
    }
    let mut parts = topic.split('/');
    for level in filter {
        match level {
            Level::Multi => return true,
            Level::Single => {
                if parts.next().is_none() {
                    return false;
                }
            }
            Level::Exact(want) => match parts.next() {
                Some(part) if part == &**want => {}
                _ => return false,
            },
        }
    }
    parts.next().is_none()
}

/// Whether the first levels of two filters can match the same topic with respect to the
/// `$` rule (a wildcard first level never matches a `$` topic).
fn dollar_compatible(a: &[Level], b: &[Level]) -> bool {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) => {
            !(x.is_wildcard() && y.is_dollar() || y.is_wildcard() && x.is_dollar())
        }
        _ => true,
    }
}

/// Whether some topic matches both filters.
fn overlaps(a: &[Level], b: &[Level]) -> bool {
    if !dollar_compatible(a, b) {
        return false;
    }
    let (mut i, mut j) = (0, 0);
    loop {
        match (a.get(i), b.get(j)) {
            (Some(Level::Multi), _) | (_, Some(Level::Multi)) => return true,
            (None, None) => return true,
            // "x/#" also matches "x".
            (None, Some(_)) => return matches!(b.get(j), Some(Level::Multi)),
            (Some(_), None) => return matches!(a.get(i), Some(Level::Multi)),
            (Some(Level::Exact(x)), Some(Level::Exact(y))) if x != y => return false,
            (Some(_), Some(_)) => {}
        }
        i += 1;
        j += 1;
    }
}

/// Whether every topic matching `inner` also matches `outer`.
fn is_subset(inner: &[Level], outer: &[Level]) -> bool {
    if outer.first().is_some_and(Level::is_wildcard) && inner.first().is_some_and(Level::is_dollar)
    {
        return false;
    }
    let (mut i, mut j) = (0, 0);
    loop {
        match (inner.get(i), outer.get(j)) {
            (_, Some(Level::Multi)) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(Level::Multi), Some(_)) => return false,
            (Some(Level::Single), Some(Level::Single)) => {}
            (Some(Level::Single), Some(Level::Exact(_))) => return false,
            (Some(Level::Exact(_)), Some(Level::Single)) => {}
            (Some(Level::Exact(x)), Some(Level::Exact(y))) => {
                if x != y {
                    return false;
                }
            }
        }
        i += 1;
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous
topic read public/#
user alice
topic readwrite alice/#
topic deny alice/secret/#
topic sensors/+/temp
client gw-17
topic write telemetry/gw-17/#
anonymous
topic read status
pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

    fn acl(user: Option<&str>, client: &str) -> ClientAcl {
        let file = AclFile::parse(FILE).expect("valid file");
        ClientAcl::compile(
            &file,
            Principal {
                username: user,
                client_id: client,
            },
        )
    }

    #[test]
    fn user_rules_grant_and_deny_beats_grant() {
        let a = acl(Some("alice"), "c1");
        assert!(a.check_topic("alice/x", Operation::Write).is_allowed());
        assert!(a.check_topic("alice/x/y", Operation::Read).is_allowed());
        assert_eq!(
            a.check_topic("alice/secret/k", Operation::Read),
            Decision::Denied(Some("alice/secret/#".into()))
        );
        assert!(
            a.check_topic("sensors/1/temp", Operation::Write)
                .is_allowed()
        );
        assert!(!a.check_topic("public/x", Operation::Read).is_allowed());
        assert!(!a.check_topic("bob/x", Operation::Read).is_allowed());
    }

    #[test]
    fn anonymous_rules_apply_only_without_username() {
        let anon = acl(None, "c2");
        assert!(anon.check_topic("public/a", Operation::Read).is_allowed());
        assert!(!anon.check_topic("public/a", Operation::Write).is_allowed());
        assert!(anon.check_topic("status", Operation::Read).is_allowed());
        // %u patterns are skipped for anonymous clients.
        assert!(
            !anon
                .check_topic("users//inbox", Operation::Read)
                .is_allowed()
        );
    }

    #[test]
    fn patterns_substitute_username_and_client_id() {
        let a = acl(Some("bob"), "dev-9");
        assert!(
            a.check_topic("devices/dev-9/up", Operation::Write)
                .is_allowed()
        );
        assert!(
            !a.check_topic("devices/dev-8/up", Operation::Write)
                .is_allowed()
        );
        assert!(
            a.check_topic("users/bob/inbox", Operation::Read)
                .is_allowed()
        );
        assert!(
            !a.check_topic("users/bob/inbox", Operation::Write)
                .is_allowed()
        );
        // A username with wildcards does not widen a pattern.
        let evil = acl(Some("#"), "+");
        assert!(
            !evil
                .check_topic("users/x/inbox", Operation::Read)
                .is_allowed()
        );
        assert!(
            !evil
                .check_topic("devices/x/y", Operation::Write)
                .is_allowed()
        );
    }

    #[test]
    fn client_sections_match_the_client_id() {
        let a = acl(Some("carol"), "gw-17");
        assert!(
            a.check_topic("telemetry/gw-17/t", Operation::Write)
                .is_allowed()
        );
        assert!(
            !a.check_topic("telemetry/gw-17/t", Operation::Read)
                .is_allowed()
        );
    }

    #[test]
    fn subscriptions_overlap_grants_and_fall_inside_denials() {
        let a = acl(Some("alice"), "c1");
        assert!(a.check_subscribe("#").is_allowed());
        assert!(a.check_subscribe("alice/+").is_allowed());
        assert!(!a.check_subscribe("alice/secret/#").is_allowed());
        assert!(!a.check_subscribe("alice/secret/+/x").is_allowed());
        assert!(a.check_subscribe("$share/g/alice/#").is_allowed());
        assert!(!a.check_subscribe("bob/#").is_allowed());
        assert!(!a.check_subscribe("$SYS/#").is_allowed());
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        let file = AclFile::parse("topic read #\n").expect("valid");
        let a = ClientAcl::compile(
            &file,
            Principal {
                username: None,
                client_id: "c",
            },
        );
        assert!(a.check_topic("a/b", Operation::Read).is_allowed());
        assert!(
            !a.check_topic("$SYS/broker/uptime", Operation::Read)
                .is_allowed()
        );
    }

    #[test]
    fn filter_relations() {
        let l = levels;
        assert!(overlaps(&l("a/+"), &l("a/b/#")));
        assert!(overlaps(&l("a"), &l("a/#")));
        assert!(!overlaps(&l("a/b"), &l("a/c")));
        assert!(!overlaps(&l("a/b/c"), &l("a/+")));
        assert!(is_subset(&l("a/b"), &l("a/+")));
        assert!(is_subset(&l("a/b/c"), &l("a/#")));
        assert!(!is_subset(&l("a/+"), &l("a/b")));
        assert!(!is_subset(&l("#"), &l("a/#")));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(AclFile::parse("topic read a\nbogus x\n").unwrap_err().0, 2);
        assert!(AclFile::parse("topic read a/#/b\n").is_err());
        assert!(AclFile::parse("topic read users/%u\n").is_err());
        assert!(AclFile::parse("user\n").is_err());
        let file = AclFile::parse("topic a/b\n").expect("access defaults to readwrite");
        assert_eq!(file.rule_count(), 1);
    }
}
