//! Filter host tests against real guests: `tern-filter-pass` and `tern-filter-hostile` of
//! the filters workspace, built once per test binary (`cargo build --release --target
//! wasm32-unknown-unknown` in `filters/`, which has its own target directory).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tern_mqtt::QoS;

use super::*;
use crate::config::HumanDuration;

#[allow(
    dead_code,
    reason = "shared with the integration tests, which use all of it"
)]
#[path = "../../tests/common/guests.rs"]
mod guests;

use crate::message::{ClientId, Message, MessageProperties};
use guests::{Guest, wasm as guest};

/// A cache directory shared by the tests of this binary, so each guest compiles once.
fn shared_cache() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

fn limits() -> FilterLimitsConfig {
    FilterLimitsConfig {
        cache_dir: Some(shared_cache().to_owned()),
        // Short enough that looping guests do not slow the suite down, long enough for an
        // unoptimised test build.
        deadline_base: HumanDuration(Duration::from_millis(50)),
        ..FilterLimitsConfig::default()
    }
}

fn host_with(limits: &FilterLimitsConfig) -> FilterHost {
    FilterHost::new(limits, Path::new("unused"), Arc::default()).expect("filter host")
}

fn host() -> FilterHost {
    host_with(&limits())
}

fn message(topic: &str, properties: &[(&str, &str)]) -> Message {
    Message {
        topic: topic.to_owned(),
        payload: Bytes::from(format!("payload of {topic}")),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: MessageProperties {
            user_properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..MessageProperties::default()
        },
        expiry: None,
        publisher: ClientId::from("dev-1"),
    }
}

/// `n` messages on `t/0` .. `t/{n-1}`; those whose index is in `poison` carry the user
/// property `poison`.
fn batch(n: usize, poison: &[usize]) -> Vec<Message> {
    (0..n)
        .map(|i| {
            if poison.contains(&i) {
                message(&format!("t/{i}"), &[("poison", "yes")])
            } else {
                message(&format!("t/{i}"), &[])
            }
        })
        .collect()
}

fn chain(host: &FilterHost, guest_kind: Guest, config: &str, policy: FailurePolicy) -> Chain {
    let filter = host
        .deploy("f", &guest(guest_kind), config)
        .unwrap_or_else(|e| panic!("deploy {config:?}: {e}"));
    Chain::new(vec![filter], policy)
}

fn locals(messages: Vec<Message>) -> Vec<Routed> {
    messages
        .into_iter()
        .map(|message| Routed {
            message,
            target: Target::Local,
        })
        .collect()
}

fn topics(routed: &[Routed]) -> Vec<&str> {
    routed.iter().map(|r| r.message.topic.as_str()).collect()
}

fn dead_letter_policy() -> FailurePolicy {
    "dead-letter:dlq".parse().expect("valid policy")
}

#[test]
fn pass_filter_keeps_every_message_in_order() {
    let host = host();
    let chain = chain(&host, Guest::Pass, "", FailurePolicy::Drop);
    for n in [1, 3, 64] {
        let input = batch(n, &[]);
        assert_eq!(chain.run(input.clone()), locals(input));
    }
    let stats = chain.filters()[0].stats();
    assert_eq!(stats.batches.get(), 3);
    assert_eq!(stats.messages_in.get(), 68);
    assert_eq!(stats.kept.get(), 68);
    assert_eq!(host.metrics().kept.get(), 68);
}

#[test]
fn trap_on_poison_dead_letters_only_the_poison() {
    let host = host();
    let chain = chain(
        &host,
        Guest::Hostile,
        "trap-on:poison",
        dead_letter_policy(),
    );
    let input = batch(8, &[2, 5]);
    let out = chain.run(input.clone());
    assert_eq!(
        topics(&out),
        ["t/0", "t/1", "dlq", "t/3", "t/4", "dlq", "t/6", "t/7"]
    );
    for i in [2, 5] {
        let letter = &out[i].message;
        assert_eq!(out[i].target, Target::Local);
        let props = &letter.properties.user_properties;
        let get = |k: &str| {
            props
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get(DEAD_LETTER_TOPIC_PROPERTY),
            Some(format!("t/{i}").as_str())
        );
        let reason = get(DEAD_LETTER_ERROR_PROPERTY).expect("error property");
        assert!(reason.starts_with("f: trap"), "{reason}");
        assert_eq!(letter.payload, input[i].payload);
    }
    for i in [0, 1, 3, 4, 6, 7] {
        assert_eq!(out[i].message, input[i]);
    }
    let stats = chain.filters()[0].stats();
    assert!(stats.failed_trap.get() >= 2, "{stats:?}");
    assert_eq!(stats.policy_applied.get(), 2);
    assert_eq!(host.metrics().policy_applied.get(), 2);
    // The host still works: a clean batch passes untouched.
    let clean = batch(4, &[]);
    assert_eq!(chain.run(clean.clone()), locals(clean));
}

#[test]
fn loop_on_poison_times_out_and_drops_only_the_poison() {
    let host = host();
    let chain = chain(&host, Guest::Hostile, "loop-on:poison", FailurePolicy::Drop);
    let out = chain.run(batch(6, &[4]));
    assert_eq!(topics(&out), ["t/0", "t/1", "t/2", "t/3", "t/5"]);
    let stats = chain.filters()[0].stats();
    assert!(stats.failed_timeout.get() >= 1, "{stats:?}");
    assert_eq!(stats.failed_trap.get(), 0);
    assert_eq!(stats.policy_applied.get(), 1);
    let clean = batch(3, &[]);
    assert_eq!(chain.run(clean.clone()), locals(clean));
}

#[test]
fn whole_batch_failures_apply_the_policy_to_every_message_within_budget() {
    let host = host();
    for (config, kind) in [
        ("trap", FailureKind::Trap),
        ("err", FailureKind::Error),
        ("garbage", FailureKind::InvalidVerdicts),
        ("wrong-count", FailureKind::InvalidVerdicts),
        // Routes to a template with a span past the end of the topic.
        ("bad-span", FailureKind::InvalidVerdicts),
    ] {
        let chain = chain(&host, Guest::Hostile, config, FailurePolicy::Pass);
        let input = batch(16, &[]);
        // Pass: every message continues as if kept.
        assert_eq!(chain.run(input.clone()), locals(input), "{config}");
        let stats = chain.filters()[0].stats();
        let failures = match kind {
            FailureKind::Trap => stats.failed_trap.get(),
            FailureKind::Error => stats.failed_error.get(),
            FailureKind::InvalidVerdicts => stats.failed_invalid_verdicts.get(),
            FailureKind::Timeout | FailureKind::Memory => unreachable!(),
        };
        // The first call plus the isolation re-runs, never more than the budget.
        assert!(failures >= 2, "{config}: {stats:?}");
        let budget = u64::try_from(chain::isolation_budget(16)).expect("small");
        assert!(failures <= 1 + budget, "{config}: {failures} calls");
        assert_eq!(stats.policy_applied.get(), 16, "{config}");
    }
}

#[test]
fn looping_filter_is_stopped_by_its_deadline() {
    let host = host_with(&FilterLimitsConfig {
        deadline_base: HumanDuration(Duration::from_millis(5)),
        deadline_per_message: HumanDuration(Duration::ZERO),
        ..limits()
    });
    let chain = chain(&host, Guest::Hostile, "loop", FailurePolicy::Drop);
    assert!(chain.run(batch(4, &[])).is_empty());
    let stats = chain.filters()[0].stats();
    assert!(stats.failed_timeout.get() >= 1, "{stats:?}");
    assert_eq!(stats.policy_applied.get(), 4);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let host = host_with(&FilterLimitsConfig {
        memory_limit: crate::config::ByteSize(4 << 20),
        ..limits()
    });
    let chain = chain(&host, Guest::Hostile, "bomb", dead_letter_policy());
    let out = chain.run(batch(1, &[]));
    assert_eq!(topics(&out), ["dlq"]);
    let stats = chain.filters()[0].stats();
    assert_eq!(stats.failed_memory.get(), 1, "{stats:?}");
    assert_eq!(host.metrics().failed_memory.get(), 1);
}

#[test]
fn log_spam_is_rate_limited_and_counted() {
    let host = host();
    let chain = chain(&host, Guest::Hostile, "log-spam", FailurePolicy::Drop);
    let input = batch(2, &[]);
    assert_eq!(chain.run(input.clone()), locals(input));
    let suppressed = chain.filters()[0].stats().log_suppressed.get();
    assert!(suppressed > 0, "nothing suppressed");
    assert_eq!(host.metrics().log_suppressed.get(), suppressed);
}

#[test]
fn drop_all_drops_and_counts() {
    let host = host();
    let chain = chain(&host, Guest::Hostile, "drop-all", FailurePolicy::Pass);
    assert!(chain.run(batch(5, &[])).is_empty());
    let stats = chain.filters()[0].stats();
    assert_eq!(stats.dropped.get(), 5);
    assert_eq!(stats.kept.get(), 0);
    assert_eq!(stats.policy_applied.get(), 0);
}

#[test]
fn a_dropping_filter_hides_messages_from_later_filters() {
    let host = host();
    let drop_all = host
        .deploy("drop", &guest(Guest::Hostile), "drop-all")
        .expect("deploy");
    let trap = host
        .deploy("trap", &guest(Guest::Hostile), "trap")
        .expect("deploy");
    let chain = Chain::new(vec![drop_all, Arc::clone(&trap)], FailurePolicy::Pass);
    assert!(chain.run(batch(3, &[])).is_empty());
    assert_eq!(trap.stats().failed_trap.get(), 0);
    assert_eq!(trap.stats().messages_in.get(), 0);
}

/// The batch is packed once per chain and reused while filters keep everything; after a
/// filter drops some messages, the next one must see only the survivors.
#[test]
fn later_filters_see_the_batch_as_earlier_filters_left_it() {
    let host = host();
    let pass = host
        .deploy("pass", &guest(Guest::Pass), "")
        .expect("deploy");
    let no_poison = host
        .deploy("no-poison", &guest(Guest::Sql92), "poison IS NULL")
        .expect("deploy");
    let trap = host
        .deploy("trap", &guest(Guest::Hostile), "trap-on:poison")
        .expect("deploy");
    let input = batch(6, &[1, 4]);

    // pass, pass, sql92 drops the poison, then the trap filter never sees it.
    let chain = Chain::new(
        vec![
            Arc::clone(&pass),
            Arc::clone(&pass),
            Arc::clone(&no_poison),
            Arc::clone(&trap),
        ],
        dead_letter_policy(),
    );
    let out = chain.run(input.clone());
    assert_eq!(topics(&out), ["t/0", "t/2", "t/3", "t/5"]);
    assert_eq!(trap.stats().failed_trap.get(), 0);
    assert_eq!(trap.stats().messages_in.get(), 4);
    assert_eq!(pass.stats().messages_in.get(), 12);

    // pass keeps everything, so the trap filter gets the very same packed batch: it still
    // sees the poison, and only the poison is dead-lettered.
    let chain = Chain::new(vec![Arc::clone(&pass), trap], dead_letter_policy());
    let out = chain.run(input);
    assert_eq!(topics(&out), ["t/0", "dlq", "t/2", "t/3", "dlq", "t/5"]);
}

#[test]
fn init_failure_refuses_the_deploy_with_its_reason() {
    let host = host();
    let err = host
        .deploy("picky", &guest(Guest::Hostile), "init-fail")
        .expect_err("init-fail deployed");
    assert!(matches!(err, FilterError::InitRefused(_)), "{err}");
    assert_eq!(host.metrics().deploys_refused.get(), 1);
    let err = host
        .deploy("templated", &guest(Guest::Hostile), "bad-template")
        .expect_err("a template with `#` deployed");
    assert_eq!(
        err.to_string(),
        "init declared an invalid template 0: template text \"a/#\" holds `+`, `#` or NUL, \
         which a topic name cannot"
    );
    assert_eq!(host.metrics().deploys_refused.get(), 2);

    let wasm = guest(Guest::Hostile);
    let configs = [PipelineConfig {
        topics: vec!["t/#".into()],
        on_failure: FailurePolicy::Drop,
        filters: vec![FilterConfig {
            name: "picky".into(),
            wasm: wasm.clone(),
            config: "init-fail".into(),
        }],
    }];
    let err = PipelineSet::build(&host, &configs, None).expect_err("refused");
    let text = err.to_string();
    assert!(text.starts_with("pipeline 0: filter `picky`"), "{text}");
    assert!(text.contains(&wasm.display().to_string()), "{text}");
    assert!(text.contains("init refused the config"), "{text}");
}

fn pipeline(topics: &[&str], filters: &[(&str, Guest, &str)]) -> PipelineConfig {
    PipelineConfig {
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        on_failure: FailurePolicy::Drop,
        filters: filters
            .iter()
            .map(|(name, kind, config)| FilterConfig {
                name: (*name).to_owned(),
                wasm: guest(*kind),
                config: (*config).to_owned(),
            })
            .collect(),
    }
}

#[test]
fn a_refused_redeploy_keeps_the_running_pipelines() {
    let pipelines = Pipelines::new(host());
    pipelines
        .deploy(&[pipeline(&["t/#"], &[("gate", Guest::Hostile, "drop-all")])])
        .expect("first deploy");
    let before = pipelines.current();
    let err = pipelines
        .deploy(&[pipeline(&["t/#"], &[("gate", Guest::Hostile, "init-fail")])])
        .expect_err("refused");
    assert!(
        matches!(err, DeployError::Filter { pipeline: 0, .. }),
        "{err}"
    );
    assert!(Arc::ptr_eq(&before, &pipelines.current()));
    assert_eq!(pipelines.run(batch(3, &[])).into_routed(), []);
}

#[test]
fn an_unchanged_filter_is_reused_across_deploys() {
    let pipelines = Pipelines::new(host());
    let config = [pipeline(
        &["t/#"],
        &[("a", Guest::Pass, ""), ("b", Guest::Hostile, "ok")],
    )];
    pipelines.deploy(&config).expect("deploy");
    let first: Vec<Arc<LoadedFilter>> = pipelines
        .current()
        .filters()
        .map(|(_, f)| Arc::clone(f))
        .collect();
    let deployed = pipelines.host().metrics().deploys_ok.get();
    let mut changed = config.clone();
    changed[0].filters[1].config = "drop-all".into();
    pipelines.deploy(&changed).expect("redeploy");
    let second: Vec<Arc<LoadedFilter>> = pipelines
        .current()
        .filters()
        .map(|(_, f)| Arc::clone(f))
        .collect();
    assert!(
        Arc::ptr_eq(&first[0], &second[0]),
        "unchanged filter reloaded"
    );
    assert!(
        !Arc::ptr_eq(&first[1], &second[1]),
        "changed config not reloaded"
    );
    assert_eq!(pipelines.host().metrics().deploys_ok.get(), deployed + 1);
}

#[test]
fn first_matching_pipeline_wins_and_the_rest_pass_through() {
    let host = host();
    let configs = [
        pipeline(&["drop/#"], &[("gate", Guest::Hostile, "drop-all")]),
        pipeline(&["#"], &[("pass", Guest::Pass, "")]),
    ];
    let set = PipelineSet::build(&host, &configs, None).expect("build");
    let input = vec![
        message("drop/1", &[]),
        message("keep/1", &[]),
        message("$SYS/x", &[]),
        message("drop/2", &[]),
        message("keep/2", &[]),
    ];
    let out = set.run(input).into_routed();
    assert_eq!(topics(&out), ["keep/1", "$SYS/x", "keep/2"]);
    let pass_stats = set.filters().nth(1).expect("pass").1.stats();
    assert_eq!(
        pass_stats.messages_in.get(),
        2,
        "`$` topics are not filtered"
    );

    let only_unmatched = vec![message("$SYS/y", &[])];
    assert!(matches!(set.run(only_unmatched), Filtered::Local(_)));
    let empty = PipelineSet::empty();
    let input = batch(3, &[]);
    let Filtered::Local(same) = empty.run(input.clone()) else {
        panic!("an empty set filtered");
    };
    assert_eq!(same, input);
}

#[test]
fn invalid_pipelines_are_refused_with_their_index() {
    let host = host();
    let cases = [
        (
            pipeline(&[], &[("p", Guest::Pass, "")]),
            "`topics` is empty",
        ),
        (
            pipeline(&["a/#/b"], &[("p", Guest::Pass, "")]),
            "topic filter",
        ),
        (pipeline(&["a"], &[]), "`filters` is empty"),
        (
            pipeline(&["a"], &[("p", Guest::Pass, ""), ("p", Guest::Pass, "")]),
            "used twice",
        ),
    ];
    for (config, expected) in cases {
        let configs = [pipeline(&["ok"], &[("p", Guest::Pass, "")]), config];
        let err = PipelineSet::build(&host, &configs, None).expect_err(expected);
        let text = err.to_string();
        assert!(text.starts_with("pipeline 1: "), "{text}");
        assert!(text.contains(expected), "{text}");
    }
}

#[test]
fn second_load_hits_the_cache_without_compiling() {
    let cache = tempfile::tempdir().expect("temp dir");
    let limits = FilterLimitsConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..limits()
    };
    let first = host_with(&limits);
    first
        .deploy("p", &guest(Guest::Pass), "")
        .expect("first load");
    assert_eq!(first.compiles(), 1);
    let artifacts: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1);
    let second = host_with(&limits);
    let filter = second
        .deploy("p", &guest(Guest::Pass), "")
        .expect("cached load");
    assert_eq!(second.compiles(), 0, "compiled again despite the cache");
    let input = batch(2, &[]);
    assert_eq!(
        Chain::new(vec![filter], FailurePolicy::Drop).run(input.clone()),
        locals(input)
    );
}

#[test]
fn a_corrupt_cache_entry_is_compiled_again() {
    let cache = tempfile::tempdir().expect("temp dir");
    let limits = FilterLimitsConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..limits()
    };
    host_with(&limits)
        .deploy("p", &guest(Guest::Pass), "")
        .expect("first load");
    let entry = std::fs::read_dir(cache.path())
        .expect("cache dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("cache entry");
    std::fs::write(&entry, b"\x7fELF but not an artifact").expect("corrupt the entry");
    let host = host_with(&limits);
    let filter = host
        .deploy("p", &guest(Guest::Pass), "")
        .expect("reload after corruption");
    assert_eq!(host.compiles(), 1);
    let input = batch(2, &[]);
    assert_eq!(
        Chain::new(vec![filter], FailurePolicy::Drop).run(input.clone()),
        locals(input)
    );
    // The entry was replaced: a third host loads it without compiling.
    let third = host_with(&limits);
    third.deploy("p", &guest(Guest::Pass), "").expect("cached");
    assert_eq!(third.compiles(), 0);
}

#[test]
fn pruning_keeps_only_the_artifacts_in_use() {
    let cache = tempfile::tempdir().expect("temp dir");
    let pipelines = Pipelines::new(host_with(&FilterLimitsConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..limits()
    }));
    assert_eq!(pipelines.prune_cache().expect("prune"), 0);
    pipelines
        .deploy(&[pipeline(&["t/#"], &[("p", Guest::Pass, "")])])
        .expect("deploy pass");
    pipelines
        .deploy(&[pipeline(&["t/#"], &[("h", Guest::Hostile, "ok")])])
        .expect("deploy hostile");
    let entries = || {
        std::fs::read_dir(cache.path())
            .expect("cache dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .count()
    };
    assert_eq!(entries(), 2);
    assert_eq!(pipelines.prune_cache().expect("prune"), 1);
    assert_eq!(entries(), 1);
    // What is left is the hostile guest's artifact: a new host loads it without compiling.
    let host = host_with(&FilterLimitsConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..limits()
    });
    host.deploy("h", &guest(Guest::Hostile), "ok")
        .expect("cached");
    assert_eq!(host.compiles(), 0);
}

#[test]
fn precompiled_artifacts_load_without_compiling() {
    let wasm = std::fs::read(guest(Guest::Pass)).expect("guest");
    let cwasm = precompile(&wasm, None).expect("precompile");
    let cache = tempfile::tempdir().expect("temp dir");
    let host = host_with(&FilterLimitsConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..limits()
    });
    let filter = host.deploy_bytes("pre", &cwasm, "").expect("load .cwasm");
    assert_eq!(host.compiles(), 0);
    let input = batch(2, &[]);
    assert_eq!(
        Chain::new(vec![filter], FailurePolicy::Drop).run(input.clone()),
        locals(input)
    );
}

#[test]
fn things_that_are_not_filters_are_refused_clearly() {
    let host = host();
    let err = host.deploy_bytes("x", b"hello", "").expect_err("not wasm");
    assert!(matches!(err, FilterError::NotWasm), "{err}");
    // An empty core module (no wit-bindgen `component-type` section) becomes an empty
    // component, which is refused for what it lacks.
    let err = host
        .deploy_bytes("x", b"\0asm\x01\0\0\0", "")
        .expect_err("no bindings");
    assert!(matches!(err, FilterError::World(_)), "{err}");
    // An empty component exports nothing.
    let err = host
        .deploy_bytes("x", b"\0asm\x0d\0\x01\0", "")
        .expect_err("empty component");
    let text = err.to_string();
    assert!(
        text.contains("does not export `init`") && text.contains("does not export `process`"),
        "{text}"
    );
    let err = precompile(b"\0asm\x0d\0\x01\0", None).expect_err("empty component");
    assert!(matches!(err, FilterError::World(_)), "{err}");
}

#[test]
fn instances_are_reused_and_replaced_after_failures() {
    let host = host();
    let chain = chain(&host, Guest::Hostile, "trap-on:poison", FailurePolicy::Drop);
    let filter = Arc::clone(&chain.filters()[0]);
    for _ in 0..5 {
        chain.run(batch(4, &[]));
    }
    assert_eq!(filter.stats().instances_created.get(), 1, "not reused");
    chain.run(batch(1, &[0]));
    chain.run(batch(1, &[]));
    assert_eq!(
        filter.stats().instances_created.get(),
        2,
        "trapped instance re-entered"
    );
}

#[test]
fn concurrent_callers_share_the_pool() {
    let host = host_with(&FilterLimitsConfig {
        max_instances_per_filter: 2,
        ..limits()
    });
    let chain = Arc::new(chain(&host, Guest::Pass, "", FailurePolicy::Drop));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let chain = Arc::clone(&chain);
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let input = batch(8, &[]);
                    assert_eq!(chain.run(input.clone()), locals(input));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("caller panicked");
    }
    let created = chain.filters()[0].stats().instances_created.get();
    assert!((1..=2).contains(&created), "{created} instances");
}
