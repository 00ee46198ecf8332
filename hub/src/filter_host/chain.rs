//! A chain of filters with its failure policy ([`Chain`]), and what it produces
//! ([`Routed`] messages with their [`Target`]).
//!
//! Semantics (docs/filter-abi.md, "Chain semantics"): filters run in order; a dropped
//! message reaches no later filter; a replacement is what later filters see and what is
//! delivered; routes set a message's destinations (a later filter's routes replace them);
//! at the end a message with routes goes to those destinations only, one [`Routed`] per
//! destination in order, and a message without routes to its own topic.
//!
//! # Failures
//!
//! A failed call (trap, timeout, `Err`, invalid verdicts) is counted, then the batch is
//! split in halves that run again on fresh instances, recursively, until the failing
//! messages stand alone; the policy applies to those only, the rest get their verdicts.
//! The re-runs are bounded by [`isolation_budget`]: once it is spent, the policy applies
//! to every message still suspected.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::filter_host::filter::BatchTally;
use crate::filter_host::guest::Admission;
use crate::filter_host::verdict::{Answered, Decisions, PackedBatch, Route, RouteSet, decide};
use crate::filter_host::{CallFailure, FailurePolicy, Filtered, LoadedFilter, RoutedBatch};
use crate::message::Message;

/// User property a dead letter carries: `"<filter>: <reason>"`.
pub const DEAD_LETTER_ERROR_PROPERTY: &str = "tern-filter-error";
/// User property a dead letter carries: the topic the message was published to.
pub const DEAD_LETTER_TOPIC_PROPERTY: &str = "tern-original-topic";

/// Where a message goes after the filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The local router (and the store): delivered to subscribers of `message.topic`, and
    /// to bridges forwarding that topic.
    Local,
    /// Forwarded by this bridge only, under `message.topic` upstream.
    Bridge {
        /// The bridge's configured name.
        bridge: Arc<str>,
    },
}

/// A message with where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The message (for [`Target::Bridge`], `topic` is the upstream topic).
    pub message: Message,
    /// Where it goes.
    pub target: Target,
}

/// Filters run in order on a batch, with the policy for messages a filter fails on.
#[derive(Debug, Clone)]
pub struct Chain {
    filters: Vec<Arc<LoadedFilter>>,
    on_failure: FailurePolicy,
}

/// What a filter did to one message so far (the message itself stays in the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Alive,
    Dropped,
    /// Dead-lettered; the reason is `reasons[i]`.
    DeadLetter(usize),
}

/// A batch on its way through the chain. The side tables stay empty (no allocation) until
/// a filter routes a message or replaces a topic.
struct Run {
    messages: Vec<Message>,
    fates: Vec<Fate>,
    reasons: Vec<String>,
    /// Per message once any message was routed; empty before.
    routes: Vec<Option<RouteSet>>,
    /// Per message once any topic was replaced; the topic it was published to.
    published: Vec<Option<String>>,
}

impl Run {
    fn set_routes(&mut self, i: usize, routes: RouteSet) {
        if self.routes.is_empty() {
            self.routes.resize_with(self.messages.len(), || None);
        }
        self.routes[i] = Some(routes);
    }

    fn remember_published(&mut self, i: usize) {
        if self.published.is_empty() {
            self.published.resize_with(self.messages.len(), || None);
        }
        if self.published[i].is_none() {
            self.published[i] = Some(self.messages[i].topic.clone());
        }
    }

    /// Whether every message the filters kept goes to its own topic locally (no routes, no
    /// dead letters).
    fn all_local(&self) -> bool {
        self.routes.is_empty() && !self.fates.iter().any(|f| matches!(f, Fate::DeadLetter(_)))
    }

    /// Whether every message kept goes to one destination (its own topic, or its single
    /// route) and none is a dead letter: the batch can then be retargeted in place.
    fn one_destination_each(&self) -> bool {
        !self.fates.iter().any(|f| matches!(f, Fate::DeadLetter(_)))
            && !self
                .routes
                .iter()
                .any(|r| matches!(r, Some(RouteSet::Many(_))))
    }

    /// The outputs when [`one_destination_each`](Self::one_destination_each): the batch's
    /// own messages, dropped ones removed and routed ones retargeted, in place.
    fn into_retargeted(self) -> RoutedBatch {
        let Run {
            mut messages,
            fates,
            mut routes,
            ..
        } = self;
        let mut bridges = Vec::with_capacity(messages.len());
        if !fates.contains(&Fate::Dropped) {
            // Nothing to remove (a router's common case): one pass, routes taken in order.
            // `routes` is empty when no message was routed.
            let mut routes = routes.into_iter();
            bridges.extend(
                messages
                    .iter_mut()
                    .map(|message| bridge_after(message, routes.next().flatten())),
            );
            return RoutedBatch::from_parts(messages, bridges);
        }
        let mut index = 0;
        messages.retain_mut(|message| {
            let i = index;
            index += 1;
            if fates[i] != Fate::Alive {
                return false;
            }
            let route = routes.get_mut(i).and_then(Option::take);
            bridges.push(bridge_after(message, route));
            true
        });
        RoutedBatch::from_parts(messages, bridges)
    }

    /// The messages not dropped, in order (the batch's own allocation).
    fn into_kept(self) -> Vec<Message> {
        let Run {
            mut messages,
            fates,
            ..
        } = self;
        if fates.contains(&Fate::Dropped) {
            let mut fates = fates.iter();
            messages.retain(|_| fates.next() == Some(&Fate::Alive));
        }
        messages
    }

    /// Hands every output to `emit`, with the index of its input.
    fn emit(self, policy: &FailurePolicy, emit: &mut impl FnMut(usize, Routed)) {
        let Run {
            messages,
            fates,
            mut reasons,
            mut routes,
            mut published,
        } = self;
        for (index, (message, fate)) in messages.into_iter().zip(fates).enumerate() {
            let end = match fate {
                Fate::Dropped => End::Dropped,
                Fate::DeadLetter(reason) => End::DeadLetter {
                    reason: reasons
                        .get_mut(reason)
                        .map(std::mem::take)
                        .unwrap_or_default(),
                    published: published.get_mut(index).and_then(Option::take),
                },
                Fate::Alive => End::Deliver {
                    routes: routes.get_mut(index).and_then(Option::take),
                },
            };
            emit_one(index, message, end, policy, emit);
        }
    }
}

/// How one message leaves the chain.
enum End {
    Dropped,
    DeadLetter {
        reason: String,
        /// The topic it was published to, if a replacement changed it.
        published: Option<String>,
    },
    Deliver {
        routes: Option<RouteSet>,
    },
}

impl Chain {
    /// A chain of `filters` (run in this order) with its failure policy.
    pub fn new(filters: Vec<Arc<LoadedFilter>>, on_failure: FailurePolicy) -> Self {
        Self {
            filters,
            on_failure,
        }
    }

    /// The filters, in order.
    pub fn filters(&self) -> &[Arc<LoadedFilter>] {
        &self.filters
    }

    /// The failure policy.
    pub fn on_failure(&self) -> &FailurePolicy {
        &self.on_failure
    }

    /// Runs the batch through every filter. The output keeps input order; a message routed
    /// to several destinations becomes several [`Routed`], in destination order. Runs on
    /// the calling thread; never panics because of a guest.
    pub fn run(&self, batch: Vec<Message>) -> Vec<Routed> {
        self.run_filtered(batch).into_routed()
    }

    /// [`run`](Self::run), returning the batch itself ([`Filtered::Local`]) when every
    /// message the filters kept simply goes on to its own topic (replacements applied,
    /// dropped messages removed in place), which spares building the output.
    pub fn run_filtered(&self, batch: Vec<Message>) -> Filtered {
        let run = self.execute(batch);
        if run.all_local() {
            return Filtered::Local(run.into_kept());
        }
        if run.one_destination_each() {
            return Filtered::Routed(run.into_retargeted());
        }
        let mut out = RoutedBatch::with_capacity(run.messages.len());
        run.emit(&self.on_failure, &mut |_, routed| out.push(routed));
        Filtered::Routed(out)
    }

    /// [`run`](Self::run), handing each output with the index of the input it came from.
    pub(crate) fn run_with(&self, batch: Vec<Message>, mut emit: impl FnMut(usize, Routed)) {
        self.execute(batch).emit(&self.on_failure, &mut emit);
    }

    fn execute(&self, messages: Vec<Message>) -> Run {
        let mut run = Run {
            fates: vec![Fate::Alive; messages.len()],
            messages,
            reasons: Vec::new(),
            routes: Vec::new(),
            published: Vec::new(),
        };
        if self.filters.is_empty() || run.messages.is_empty() {
            return run;
        }
        let received_ms = unix_ms();
        let mut alive: Vec<usize> = (0..run.messages.len()).collect();
        // Packed once; packed again only after a filter changed the batch.
        let mut packed = PackedBatch::new();
        for filter in &self.filters {
            if alive.is_empty() {
                break;
            }
            let unchanged = self.run_filter(filter, &mut run, &alive, &mut packed, received_ms);
            if !unchanged {
                packed.invalidate();
                alive.retain(|&i| run.fates[i] == Fate::Alive);
            }
        }
        run
    }

    /// Runs one filter on the messages `group` (indices into the run), isolating failures.
    /// Returns whether the filter kept every message unchanged (so `packed` still holds
    /// the batch as the next filter must see it).
    fn run_filter(
        &self,
        filter: &LoadedFilter,
        run: &mut Run,
        group: &[usize],
        packed: &mut PackedBatch,
        received_ms: u64,
    ) -> bool {
        let first = match call(filter, &run.messages, group, packed, received_ms) {
            Ok(decisions) => {
                let unchanged = matches!(decisions, Decisions::Unchanged);
                apply(filter, run, group, decisions);
                return unchanged;
            }
            Err(failure) => failure,
        };
        // Isolation: ranges of `group` known to fail, with the failure seen.
        let mut budget = isolation_budget(group.len());
        let mut failing = vec![(0, group.len(), first.clone())];
        let mut poisoned = 0usize;
        while let Some((lo, hi, failure)) = failing.pop() {
            if hi - lo == 1 || budget == 0 {
                poisoned += hi - lo;
                self.apply_policy(filter, run, &group[lo..hi], &failure);
                continue;
            }
            let mid = lo + (hi - lo) / 2;
            for (a, b) in [(lo, mid), (mid, hi)] {
                if budget == 0 {
                    failing.push((a, b, failure.clone()));
                    continue;
                }
                budget -= 1;
                let mut half = PackedBatch::new();
                match call(filter, &run.messages, &group[a..b], &mut half, received_ms) {
                    Ok(decisions) => apply(filter, run, &group[a..b], decisions),
                    Err(half_failure) => failing.push((a, b, half_failure)),
                }
            }
        }
        let shared = filter.shared();
        if let Admission::Yes { suppressed } = shared.failure_log.admit(std::time::Instant::now()) {
            tracing::warn!(
                target: "tern::filter",
                filter = %shared.name,
                kind = %first.kind,
                reason = %first.detail,
                batch = group.len(),
                failing = poisoned,
                policy = %self.on_failure,
                suppressed,
                "filter failed; failure policy applied to the failing messages"
            );
        }
        false
    }

    fn apply_policy(
        &self,
        filter: &LoadedFilter,
        run: &mut Run,
        members: &[usize],
        failure: &CallFailure,
    ) {
        filter.shared().count_policy(members.len());
        for &i in members {
            match &self.on_failure {
                FailurePolicy::Pass => {}
                FailurePolicy::Drop => run.fates[i] = Fate::Dropped,
                FailurePolicy::DeadLetter(_) => {
                    run.reasons.push(format!("{}: {failure}", filter.name()));
                    run.fates[i] = Fate::DeadLetter(run.reasons.len() - 1);
                }
            }
        }
    }
}

/// Calls made to isolate the failing messages of a failed batch of `n`: enough to isolate
/// two poison messages by halving (two calls per level), then the policy applies to
/// whatever is still suspected. Bounds the time one bad batch can hold a worker.
pub(crate) fn isolation_budget(n: usize) -> usize {
    let levels = usize::try_from(usize::BITS - n.leading_zeros()).unwrap_or(usize::MAX);
    levels.saturating_mul(4)
}

/// One call of `filter` on `group`, counted when it fails.
fn call(
    filter: &LoadedFilter,
    messages: &[Message],
    group: &[usize],
    packed: &mut PackedBatch,
    received_ms: u64,
) -> Result<Decisions, CallFailure> {
    let count = group.len();
    let setup = filter.setup();
    let answered = Answered {
        messages,
        group,
        contents: setup.contents,
        templates: &setup.templates,
    };
    let result = filter.process(messages, group, packed, received_ms, |buf| {
        decide(buf, &answered)
    });
    if let Err(failure) = &result {
        filter.shared().count_failure(failure.kind);
        tracing::debug!(
            target: "tern::filter",
            filter = filter.name(),
            messages = count,
            kind = %failure.kind,
            reason = %failure.detail,
            "filter call failed"
        );
    }
    result
}

/// Applies the decisions for `group` and counts them.
fn apply(filter: &LoadedFilter, run: &mut Run, group: &[usize], decisions: Decisions) {
    let mut tally = BatchTally {
        messages: group.len(),
        kept: group.len(),
        ..BatchTally::default()
    };
    if let Decisions::Edited(edited) = decisions {
        // `kept` is empty when every message was kept.
        for (&i, kept) in group.iter().zip(edited.kept) {
            if !kept {
                run.fates[i] = Fate::Dropped;
                tally.kept -= 1;
            }
        }
        for (index, replacement) in edited.replacements {
            let Some(&i) = group.get(index) else {
                continue;
            };
            tally.replaced += 1;
            if replacement.topic != run.messages[i].topic {
                run.remember_published(i);
            }
            replacement.apply(&mut run.messages[i]);
        }
        tally.routed = edited.routed;
        // The whole batch's first routes (a router's case): adopted as they are.
        if run.routes.is_empty() && group.len() == run.messages.len() {
            run.routes = edited.routes;
        } else {
            for (index, routes) in edited.routes.into_iter().enumerate() {
                if let (Some(routes), Some(&i)) = (routes, group.get(index)) {
                    run.set_routes(i, routes);
                }
            }
        }
    }
    filter.shared().count_batch(tally);
}

/// Emits what became of one message.
fn emit_one(
    index: usize,
    mut message: Message,
    end: End,
    policy: &FailurePolicy,
    emit: &mut impl FnMut(usize, Routed),
) {
    match end {
        End::Dropped => {}
        End::DeadLetter { reason, published } => {
            let FailurePolicy::DeadLetter(topic) = policy else {
                return;
            };
            let original = published.unwrap_or_else(|| message.topic.clone());
            let properties = &mut message.properties.user_properties;
            properties.push((DEAD_LETTER_ERROR_PROPERTY.to_owned(), reason));
            properties.push((DEAD_LETTER_TOPIC_PROPERTY.to_owned(), original));
            message.topic = topic.to_string();
            // A dead letter must not replace the retained message of the dead-letter topic.
            message.retain = false;
            emit(
                index,
                Routed {
                    message,
                    target: Target::Local,
                },
            );
        }
        End::Deliver { routes: None } => emit(
            index,
            Routed {
                message,
                target: Target::Local,
            },
        ),
        End::Deliver {
            routes: Some(RouteSet::One(route)),
        } => {
            // One destination (the common case): the message itself goes, no copies.
            let target = retarget(&mut message, route);
            emit(index, Routed { message, target });
        }
        End::Deliver {
            routes: Some(RouteSet::Many(routes)),
        } => {
            let count = routes.len();
            let mut remaining = Some(message);
            for (n, route) in routes.into_iter().enumerate() {
                // The last destination takes the message itself.
                let copy = if n + 1 == count {
                    remaining.take()
                } else {
                    remaining.clone()
                };
                let Some(mut copy) = copy else {
                    break;
                };
                let target = retarget(&mut copy, route);
                emit(
                    index,
                    Routed {
                        message: copy,
                        target,
                    },
                );
            }
        }
    }
}

/// Gives `message` the topic of its single route, if it has one, and returns the bridge it
/// goes to alone (`None`: local), as [`RoutedBatch`] holds it. Only for messages with at
/// most one destination.
fn bridge_after(message: &mut Message, routes: Option<RouteSet>) -> Option<Arc<str>> {
    match routes {
        Some(RouteSet::One(route)) => match retarget(message, route) {
            Target::Local => None,
            Target::Bridge { bridge } => Some(bridge),
        },
        _ => None,
    }
}

/// Gives `message` the topic of `route` and says where it goes.
fn retarget(message: &mut Message, route: Route) -> Target {
    match route {
        Route::Local(topic) => {
            message.topic = topic;
            Target::Local
        }
        Route::Bridge { bridge, topic } => {
            message.topic = topic;
            Target::Bridge { bridge }
        }
    }
}

/// Now, in Unix milliseconds: the `received_ms` of every record of a batch. The hub filters
/// at ingest, so this is the receive time to within the batch's own latency.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tern_mqtt::QoS;

    use super::*;
    use crate::filter_host::verdict::Replacement;
    use crate::message::MessageProperties;

    fn message(topic: &str) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"p"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: MessageProperties::default(),
            expiry: None,
            publisher: Arc::from("dev"),
        }
    }

    fn emitted(message: Message, end: End, policy: &FailurePolicy) -> Vec<(usize, Routed)> {
        let mut out = Vec::new();
        emit_one(7, message, end, policy, &mut |i, r| out.push((i, r)));
        out
    }

    #[test]
    fn routes_fan_out_in_destination_order() {
        let routes = vec![
            Route::Local("a/1".into()),
            Route::Bridge {
                bridge: Arc::from("cloud"),
                topic: "up/1".into(),
            },
            Route::Local("a/2".into()),
        ];
        let out = emitted(
            message("in"),
            End::Deliver {
                routes: Some(RouteSet::Many(routes)),
            },
            &FailurePolicy::Pass,
        );
        let got: Vec<(usize, &str, &Target)> = out
            .iter()
            .map(|(i, r)| (*i, r.message.topic.as_str(), &r.target))
            .collect();
        let cloud = Target::Bridge {
            bridge: Arc::from("cloud"),
        };
        assert_eq!(
            got,
            [
                (7, "a/1", &Target::Local),
                (7, "up/1", &cloud),
                (7, "a/2", &Target::Local)
            ]
        );
        assert!(out.iter().all(|(_, r)| r.message.payload == "p"));
    }

    #[test]
    fn unrouted_messages_keep_their_topic_and_dropped_ones_vanish() {
        let out = emitted(
            message("in"),
            End::Deliver { routes: None },
            &FailurePolicy::Pass,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.message, message("in"));
        assert!(emitted(message("in"), End::Dropped, &FailurePolicy::Drop).is_empty());
    }

    #[test]
    fn dead_letters_carry_the_reason_and_the_published_topic() {
        let mut replaced = message("in");
        Replacement {
            topic: "rewritten".into(),
            qos: QoS::AtMostOnce,
            retain: true,
            content_type: None,
            payload: None,
            user_properties: Some(vec![("k".into(), "v".into())]),
        }
        .apply(&mut replaced);
        let letter = End::DeadLetter {
            reason: "f: trap: boom".into(),
            published: Some("in".into()),
        };
        let policy: FailurePolicy = "dead-letter:dlq".parse().expect("policy");
        let out = emitted(replaced, letter, &policy);
        assert_eq!(out.len(), 1);
        let routed = &out[0].1;
        assert_eq!(routed.target, Target::Local);
        assert_eq!(routed.message.topic, "dlq");
        assert!(!routed.message.retain);
        assert_eq!(routed.message.qos, QoS::AtMostOnce);
        assert_eq!(
            routed.message.properties.user_properties,
            [
                ("k".to_owned(), "v".to_owned()),
                (
                    DEAD_LETTER_ERROR_PROPERTY.to_owned(),
                    "f: trap: boom".to_owned()
                ),
                (DEAD_LETTER_TOPIC_PROPERTY.to_owned(), "in".to_owned()),
            ]
        );
    }

    #[test]
    fn retargeting_in_place_gives_what_emitting_gives() {
        let run = || Run {
            messages: vec![message("a"), message("b"), message("c"), message("d")],
            fates: vec![Fate::Alive, Fate::Dropped, Fate::Alive, Fate::Alive],
            reasons: Vec::new(),
            routes: vec![
                Some(RouteSet::One(Route::Local("x/a".into()))),
                None,
                Some(RouteSet::One(Route::Bridge {
                    bridge: Arc::from("cloud"),
                    topic: "up/c".into(),
                })),
                None,
            ],
            published: Vec::new(),
        };
        assert!(run().one_destination_each());
        let in_place: Vec<Routed> = run().into_retargeted().into_iter().collect();
        let mut emitted = Vec::new();
        run().emit(&FailurePolicy::Pass, &mut |_, routed| emitted.push(routed));
        assert_eq!(in_place, emitted);
        let got: Vec<(&str, &Target)> = in_place
            .iter()
            .map(|r| (r.message.topic.as_str(), &r.target))
            .collect();
        let cloud = Target::Bridge {
            bridge: Arc::from("cloud"),
        };
        assert_eq!(
            got,
            [
                ("x/a", &Target::Local),
                ("up/c", &cloud),
                ("d", &Target::Local)
            ]
        );
        // Nothing dropped: the single pass gives the same.
        let alive = || {
            let mut run = run();
            run.fates[1] = Fate::Alive;
            run
        };
        let in_place: Vec<Routed> = alive().into_retargeted().into_iter().collect();
        let mut emitted = Vec::new();
        alive().emit(&FailurePolicy::Pass, &mut |_, routed| emitted.push(routed));
        assert_eq!(in_place, emitted);
        assert_eq!(in_place.len(), 4);
        // Several destinations, or a dead letter, need the general path.
        let mut many = run();
        many.routes[3] = Some(RouteSet::Many(vec![Route::Local("1".into())]));
        assert!(!many.one_destination_each());
        let mut letter = run();
        letter.fates[3] = Fate::DeadLetter(0);
        assert!(!letter.one_destination_each());
    }

    #[test]
    fn isolation_budget_covers_two_poison_messages() {
        // Two poison messages in n need at most 4 calls per halving level.
        for n in [1usize, 2, 16, 256, 10_000] {
            let levels = n.next_power_of_two().trailing_zeros() as usize;
            assert!(isolation_budget(n) >= 4 * levels, "{n}");
            assert!(isolation_budget(n) <= 4 * (levels + 1), "{n}");
        }
    }
}
