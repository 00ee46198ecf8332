//! The guest SDK for Tern filters: implement [`Filter`], call [`export!`], build for
//! `wasm32-unknown-unknown`. The crate handles the WIT contract (`wit/filter.wit`) and the
//! packed batch ABI (`docs/filter-abi.md`); a filter sees one borrowed [`Message`] at a time
//! and answers with a [`Verdict`]. A filter crate needs no `wit-bindgen` dependency and no
//! WIT file.
//!
//! # Write your own filter
//!
//! ```
//! use tern_filter::{Filter, Message, Verdict};
//!
//! struct MinTemp { min: f64 }
//!
//! impl Filter for MinTemp {
//!     fn init(config: &str) -> Result<Self, String> {
//!         Ok(Self { min: config.trim().parse().map_err(|e| format!("{e}"))? })
//!     }
//!     fn filter(&mut self, msg: &Message<'_>) -> Verdict {
//!         match msg.property("temp").and_then(|t| t.parse::<f64>().ok()) {
//!             Some(t) if t >= self.min => Verdict::Keep,
//!             _ => Verdict::Drop,
//!         }
//!     }
//! }
//!
//! tern_filter::export!(MinTemp);
//! # use tern_filter::testing::{Outcome, TestMessage, run};
//! # let mut f = MinTemp::init("20").unwrap();
//! # let out = run(&mut f, &[TestMessage::new("t").property("temp", "21"), TestMessage::new("t")]).unwrap();
//! # assert_eq!(out, [Outcome::kept(), Outcome::dropped()]);
//! ```
//!
//! The crate is a `cdylib` (`[lib] crate-type = ["cdylib", "rlib"]` to unit-test it too) in
//! the `filters/` workspace; `cargo xtask build-filters` turns it into a component. Natively
//! `export!` only checks the type, and [`testing::run`] drives the filter through the same
//! batch code the guest runs.
//!
//! Verdicts: [`Verdict::Keep`], [`Verdict::Drop`], [`Verdict::Replace`] with a
//! [`NewMessage`] (start from `NewMessage::from(msg)`), [`Verdict::Route`] with
//! [`Route`]s, and [`Verdict::ReplaceAndRoute`] for both. A filter on a hot path can
//! override [`Filter::decide`] instead and write its decision straight into the verdict
//! buffer through a [`Decision`] (borrowed [`Destination`]s, no allocation). A panic in
//! `filter` traps the instance; the hub then applies the pipeline's failure policy to the
//! message.
//!
//! # Layout
//!
//! - `message`: [`Message`] and its [`Properties`].
//! - `verdict`: [`Verdict`], [`NewMessage`], [`Route`].
//! - `process`: [`process_batch`], the batch loop, and [`Decision`].
//! - `host`: [`log`] and [`now_ms`], the host imports.
//! - `glue`: the WIT bindings and the entry points [`export!`] wires up (hidden).
//! - [`testing`]: [`TestMessage`](testing::TestMessage), [`run`](testing::run),
//!   [`Outcome`](testing::Outcome).

// Lets the generated bindings name this crate by its external path from inside it.
extern crate self as tern_filter;

mod glue;
mod host;
mod message;
mod process;
pub mod testing;
mod verdict;

pub use host::{log, now_ms};
pub use message::{Message, Properties};
pub use process::{Decision, process_batch};
pub use tern_filter_abi::{
    AbiError, AnyDestination, Destination, MessageView, RawDestination, RecordRef, Template,
    TemplatePart, TemplateRoute, TopicSpan, bytes,
};
pub use verdict::{NewMessage, Route, Verdict};

/// A filter: decides each message of a batch in order.
///
/// One instance lives in each guest; the hub runs a guest per worker, so instances never
/// share state with each other.
pub trait Filter: Sized + 'static {
    /// Whether batches carry payloads (the WIT `needs.payload`). Without it
    /// [`Message::payload`] is `None` and batches are smaller.
    const NEEDS_PAYLOAD: bool = false;

    /// Whether batches carry user properties (the WIT `needs.properties`). A filter that
    /// never reads them can say `false`: the hub then packs none, [`Message::property`]
    /// finds nothing, and a replacement the filter writes must carry no properties (the
    /// message keeps its own).
    const NEEDS_PROPERTIES: bool = true;

    /// Builds the filter from the pipeline's config string. An `Err` rejects the deployment
    /// and its text is shown to the operator.
    fn init(config: &str) -> Result<Self, String>;

    /// Decides one message.
    fn filter(&mut self, msg: &Message<'_>) -> Verdict;

    /// The topic templates this filter's routes may name by index ([`TemplateRoute`],
    /// written with [`Decision::route_any`]): the hub renders the topic of such a route
    /// from spans of the message's topic, which is cheaper than the filter building it.
    /// Asked once, right after [`init`](Self::init); the hub checks them and refuses the
    /// deployment if one is invalid.
    fn templates(&self) -> Vec<Template> {
        Vec::new()
    }

    /// Decides one message by writing into the verdict buffer directly. The default writes
    /// what [`filter`](Self::filter) returns; override it to route or replace without
    /// allocating (keep the two consistent: tests may call either). An `Err` fails the
    /// batch.
    fn decide(&mut self, msg: &Message<'_>, out: Decision<'_>) -> Result<(), AbiError> {
        out.verdict(self.filter(msg))
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::glue::*;
}

/// Exports a [`Filter`] type as this crate's filter component (once per crate).
///
/// On wasm32 this implements the WIT world's exports over an instance held in a
/// thread-local `RefCell<Option<F>>`: `init` builds it (a `process` before a successful
/// `init` returns `Err`), `process` runs [`process_batch`]. On other targets it only checks
/// that the type implements [`Filter`].
#[macro_export]
macro_rules! export {
    ($filter:ty) => {
        const _: () = {
            fn __tern_filter_check<F: $crate::Filter>() {}
            let _ = __tern_filter_check::<$filter>;
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static __TERN_FILTER: $crate::__private::Slot<$filter> =
                    const { ::std::cell::RefCell::new(::core::option::Option::None) };
            }
            struct __TernFilterExport;
            impl $crate::__private::bindings::Guest for __TernFilterExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<$crate::__private::bindings::Setup, ::std::string::String>
                {
                    $crate::__private::init(&__TERN_FILTER, &config)
                }
                fn process(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::__private::process(&__TERN_FILTER, batch)
                }
            }
            $crate::__private::bindings::__export_filter_world!(
                __TernFilterExport with_types_in $crate::__private::bindings
            );
        };
    };
}
