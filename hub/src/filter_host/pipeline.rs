//! Pipelines: which messages go through which chain ([`PipelineSet`]), built from
//! `[[pipeline]]` config with reuse of unchanged filters, and swapped at run time
//! ([`Pipelines`]) so in-flight batches finish on the set they started with.
//!
//! Matching: a message goes through the **first** pipeline (in config order) one of whose
//! topic filters matches its topic, and through that one only. Messages no pipeline
//! matches, and `$` topics (never filtered), pass unchanged to [`Target::Local`].

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::filter_host::load::Digest;
use crate::filter_host::{
    Chain, DeployError, FilterError, FilterHost, LoadedFilter, PipelineConfig, Routed, Target,
};
use crate::message::Message;
use crate::router::TopicFilter;

/// One pipeline: its topic filters and its chain.
#[derive(Debug)]
struct Pipeline {
    topics: Vec<String>,
    chain: Chain,
}

/// Deployed pipelines, immutable; [`Pipelines`] swaps whole sets.
#[derive(Debug, Default)]
pub struct PipelineSet {
    pipelines: Vec<Pipeline>,
}

/// What [`PipelineSet::run`] returns. Iterate it to get [`Routed`] messages in order.
#[derive(Debug)]
pub enum Filtered {
    /// Every message here goes to [`Target::Local`] under its own topic, in input order.
    /// Either no pipeline applied (the batch as given: the common case costs nothing), or
    /// the filters only kept, replaced and dropped messages (replacements applied, dropped
    /// messages removed from the batch in place).
    Local(Vec<Message>),
    /// Some message was dropped, routed or dead-lettered: the outputs in order.
    Routed(RoutedBatch),
}

impl Filtered {
    /// Every output as a [`Routed`].
    pub fn into_routed(self) -> Vec<Routed> {
        match self {
            Filtered::Routed(routed) => routed.into_iter().collect(),
            Filtered::Local(batch) => batch.into_iter().map(local).collect(),
        }
    }
}

/// Filtered messages in output order, each with where it goes: the shape the ingest path
/// consumes (messages, and per message the bridge it goes to alone), so a chain that routes
/// each message to one destination hands back its own batch, retargeted in place.
#[derive(Debug, Default)]
pub struct RoutedBatch {
    messages: Vec<Message>,
    /// `bridges[i]`: the bridge `messages[i]` is forwarded by alone; `None`: local.
    bridges: Vec<Option<Arc<str>>>,
}

impl RoutedBatch {
    /// An empty batch with room for `n` outputs.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            messages: Vec::with_capacity(n),
            bridges: Vec::with_capacity(n),
        }
    }

    /// From messages and their bridges (same length).
    pub(crate) fn from_parts(messages: Vec<Message>, bridges: Vec<Option<Arc<str>>>) -> Self {
        debug_assert_eq!(messages.len(), bridges.len());
        Self { messages, bridges }
    }

    /// Appends one output.
    pub fn push(&mut self, routed: Routed) {
        let bridge = match routed.target {
            Target::Local => None,
            Target::Bridge { bridge } => Some(bridge),
        };
        self.messages.push(routed.message);
        self.bridges.push(bridge);
    }

    /// Outputs.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The messages in order, and per message the bridge it goes to alone (`None`:
    /// local).
    pub fn into_parts(self) -> (Vec<Message>, Vec<Option<Arc<str>>>) {
        (self.messages, self.bridges)
    }
}

fn routed(message: Message, bridge: Option<Arc<str>>) -> Routed {
    Routed {
        message,
        target: match bridge {
            None => Target::Local,
            Some(bridge) => Target::Bridge { bridge },
        },
    }
}

/// Iterator over a [`RoutedBatch`].
type RoutedIter = std::iter::Map<
    std::iter::Zip<std::vec::IntoIter<Message>, std::vec::IntoIter<Option<Arc<str>>>>,
    fn((Message, Option<Arc<str>>)) -> Routed,
>;

impl IntoIterator for RoutedBatch {
    type Item = Routed;
    type IntoIter = RoutedIter;

    fn into_iter(self) -> RoutedIter {
        let pair: fn((Message, Option<Arc<str>>)) -> Routed = |(m, b)| routed(m, b);
        self.messages.into_iter().zip(self.bridges).map(pair)
    }
}

impl FromIterator<Routed> for RoutedBatch {
    fn from_iter<I: IntoIterator<Item = Routed>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut batch = Self::with_capacity(iter.size_hint().0);
        for routed in iter {
            batch.push(routed);
        }
        batch
    }
}

fn local(message: Message) -> Routed {
    Routed {
        message,
        target: Target::Local,
    }
}

impl IntoIterator for Filtered {
    type Item = Routed;
    type IntoIter = FilteredIter;

    fn into_iter(self) -> FilteredIter {
        match self {
            Filtered::Local(batch) => FilteredIter::Local(batch.into_iter()),
            Filtered::Routed(routed) => FilteredIter::Routed(routed.into_iter()),
        }
    }
}

/// Iterator over a [`Filtered`].
#[derive(Debug)]
pub enum FilteredIter {
    /// Messages that go to their own topic.
    Local(std::vec::IntoIter<Message>),
    /// Filtered output.
    Routed(RoutedIter),
}

impl Iterator for FilteredIter {
    type Item = Routed;

    fn next(&mut self) -> Option<Routed> {
        match self {
            FilteredIter::Local(batch) => batch.next().map(local),
            FilteredIter::Routed(routed) => routed.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            FilteredIter::Local(batch) => batch.size_hint(),
            FilteredIter::Routed(routed) => routed.size_hint(),
        }
    }
}

impl ExactSizeIterator for FilteredIter {}

/// What identifies a deployed filter for reuse: same name, same bytes, same config.
type ReuseKey = (String, Digest, String);

impl PipelineSet {
    /// No pipelines: every message passes unchanged.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether there are no pipelines.
    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }

    /// Loads and initialises every filter of `pipelines`. A filter of `previous` with the
    /// same name, wasm bytes and config is reused as it is (with its warm instances and
    /// counters). The first error refuses the whole set, naming the pipeline index, the
    /// filter, its file and the reason; `init` rejecting its config is such an error.
    pub fn build(
        host: &FilterHost,
        pipelines: &[PipelineConfig],
        previous: Option<&PipelineSet>,
    ) -> Result<PipelineSet, DeployError> {
        let mut reusable: HashMap<ReuseKey, Arc<LoadedFilter>> = HashMap::new();
        if let Some(previous) = previous {
            for (_, filter) in previous.filters() {
                let key = (
                    filter.name().to_owned(),
                    filter.digest(),
                    filter.config().to_owned(),
                );
                reusable.insert(key, Arc::clone(filter));
            }
        }
        let mut built = Vec::with_capacity(pipelines.len());
        for (index, config) in pipelines.iter().enumerate() {
            let refuse = |reason: String| DeployError::Pipeline {
                pipeline: index,
                reason,
            };
            if config.topics.is_empty() {
                return Err(refuse("`topics` is empty".into()));
            }
            for topic in &config.topics {
                let filter = TopicFilter::parse(topic)
                    .map_err(|e| refuse(format!("topic filter {topic:?}: {e}")))?;
                if filter.is_shared() {
                    return Err(refuse(format!(
                        "topic filter {topic:?} is a shared subscription"
                    )));
                }
            }
            if config.filters.is_empty() {
                return Err(refuse("`filters` is empty".into()));
            }
            let mut filters = Vec::with_capacity(config.filters.len());
            for (n, filter) in config.filters.iter().enumerate() {
                if filter.name.is_empty() {
                    return Err(refuse(format!("filter {n} has an empty name")));
                }
                if config.filters[..n].iter().any(|f| f.name == filter.name) {
                    return Err(refuse(format!(
                        "filter name `{}` is used twice",
                        filter.name
                    )));
                }
                let loaded = load_filter(
                    host,
                    &mut reusable,
                    filter.name.as_str(),
                    &filter.wasm,
                    &filter.config,
                )
                .map_err(|source| DeployError::Filter {
                    pipeline: index,
                    filter: filter.name.clone(),
                    file: filter.wasm.clone(),
                    source,
                })?;
                filters.push(loaded);
            }
            built.push(Pipeline {
                topics: config.topics.clone(),
                chain: Chain::new(filters, config.on_failure.clone()),
            });
        }
        Ok(PipelineSet { pipelines: built })
    }

    /// Every filter with the index of its pipeline, in config order (the admin view).
    pub fn filters(&self) -> impl Iterator<Item = (usize, &Arc<LoadedFilter>)> {
        self.pipelines
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.chain.filters().iter().map(move |f| (i, f)))
    }

    /// The pipeline a message on `topic` goes through.
    fn pipeline_for(&self, topic: &str) -> Option<usize> {
        if topic.starts_with('$') {
            return None;
        }
        self.pipelines.iter().position(|p| {
            p.topics
                .iter()
                .any(|filter| tern_mqtt::topic::matches(filter, topic))
        })
    }

    /// Runs each message through the first pipeline matching its topic (see the module
    /// docs). Output order is input order; a message routed to several destinations yields
    /// several outputs in destination order. With no pipeline, or none matching, the batch
    /// comes back as [`Filtered::Local`] without any work.
    pub fn run(&self, batch: Vec<Message>) -> Filtered {
        if self.pipelines.is_empty() || batch.is_empty() {
            return Filtered::Local(batch);
        }
        let assigned: Vec<Option<usize>> =
            batch.iter().map(|m| self.pipeline_for(&m.topic)).collect();
        let first = assigned[0];
        if assigned.iter().all(|a| *a == first) {
            return match first {
                None => Filtered::Local(batch),
                Some(p) => self.pipelines[p].chain.run_filtered(batch),
            };
        }
        let len = batch.len();
        let mut per_pipeline: Vec<(Vec<usize>, Vec<Message>)> = (0..self.pipelines.len())
            .map(|_| (Vec::new(), Vec::new()))
            .collect();
        let mut out: Vec<(usize, Routed)> = Vec::with_capacity(len);
        for (index, (message, assigned)) in batch.into_iter().zip(assigned).enumerate() {
            match assigned {
                Some(p) => {
                    per_pipeline[p].0.push(index);
                    per_pipeline[p].1.push(message);
                }
                None => out.push((index, local(message))),
            }
        }
        for (pipeline, (indices, messages)) in self.pipelines.iter().zip(per_pipeline) {
            if messages.is_empty() {
                continue;
            }
            pipeline.chain.run_with(messages, |local_index, routed| {
                out.push((indices[local_index], routed));
            });
        }
        // Stable: a message's several destinations keep their order.
        out.sort_by_key(|(index, _)| *index);
        Filtered::Routed(out.into_iter().map(|(_, routed)| routed).collect())
    }
}

/// A filter from `reusable` when name, bytes and config match, else deployed anew (and
/// made reusable for the rest of this build).
fn load_filter(
    host: &FilterHost,
    reusable: &mut HashMap<ReuseKey, Arc<LoadedFilter>>,
    name: &str,
    wasm: &Path,
    config: &str,
) -> Result<Arc<LoadedFilter>, FilterError> {
    let bytes = super::load::read_wasm(wasm)?;
    let digest = Digest::of(&bytes);
    let key = (name.to_owned(), digest, config.to_owned());
    if let Some(filter) = reusable.get(&key) {
        return Ok(Arc::clone(filter));
    }
    let filter = host.deploy_digested(name, &bytes, digest, config)?;
    reusable.insert(key, Arc::clone(&filter));
    Ok(filter)
}

/// The pipelines in force, replaceable at run time without stopping traffic.
pub struct Pipelines {
    host: FilterHost,
    current: ArcSwap<PipelineSet>,
    /// Serialises deploys, so each builds on the set the previous one installed.
    deploying: Mutex<()>,
}

impl std::fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelines")
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl Pipelines {
    /// No pipelines yet.
    pub fn new(host: FilterHost) -> Self {
        Self {
            host,
            current: ArcSwap::from_pointee(PipelineSet::empty()),
            deploying: Mutex::new(()),
        }
    }

    /// Builds a new set from `configs` (reusing unchanged filters) and swaps it in. On error
    /// the current set stays in force. Batches already running finish on the old set.
    pub fn deploy(&self, configs: &[PipelineConfig]) -> Result<(), DeployError> {
        let _deploying = self
            .deploying
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load_full();
        let next = PipelineSet::build(&self.host, configs, Some(&current))?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// Deletes the compiled artifacts in the cache directory that no filter of the set in
    /// force uses (earlier versions of filters), so redeploys do not fill a small disk.
    /// Returns how many were deleted. Call it after [`deploy`](Self::deploy) when the cache
    /// directory belongs to this hub alone.
    pub fn prune_cache(&self) -> Result<usize, FilterError> {
        let _deploying = self
            .deploying
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let used: HashSet<String> = self
            .current
            .load()
            .filters()
            .map(|(_, filter)| filter.digest().cache_file())
            .collect();
        let dir = self.host.cache_dir();
        let io = |source| FilterError::Io {
            path: dir.to_owned(),
            source,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(io(err)),
        };
        let mut deleted = 0;
        for entry in entries {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.ends_with(".cwasm") && !used.contains(name) {
                std::fs::remove_file(entry.path()).map_err(|source| FilterError::Io {
                    path: entry.path(),
                    source,
                })?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// The set in force.
    pub fn current(&self) -> Arc<PipelineSet> {
        self.current.load_full()
    }

    /// Runs `batch` through the set in force ([`PipelineSet::run`]).
    pub fn run(&self, batch: Vec<Message>) -> Filtered {
        self.current.load().run(batch)
    }

    /// The filter host.
    pub fn host(&self) -> &FilterHost {
        &self.host
    }
}
