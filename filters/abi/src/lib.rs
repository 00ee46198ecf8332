//! The packed batch and verdict buffers that cross the filter boundary (ABI version
//! [`VERSION`], specified in `docs/filter-abi.md`). One implementation for both sides: the
//! hub writes batches and reads verdicts, the `tern-filter` SDK reads batches and writes
//! verdicts.
//!
//! Readers never panic: every read is bounds-checked, and malformed input comes back as an
//! [`AbiError`] naming the part and field at fault. Readers borrow from the buffer; writers
//! reuse the allocation they are given.
//!
//! # Layout
//!
//! - `wire`: bounds-checked little-endian reads and writes.
//! - `record`: [`RecordRef`], [`RecordView`], [`MessageView`] and their properties (batch
//!   records and replacements share one layout).
//! - `batch`: [`BatchWriter`] and [`Batch`].
//! - `verdict`: [`VerdictWriter`], [`Verdicts`], [`Edit`], [`Routes`], [`Destination`].
//! - `error`: [`AbiError`].
//! - [`bytes`]: short-string search, comparison and copy that are cheap inside a guest.
//!
//! # Example
//!
//! ```
//! use tern_filter_abi::{Batch, BatchWriter, Destination, RecordRef, VerdictWriter, Verdicts};
//!
//! // Host: pack a batch.
//! let rec = RecordRef {
//!     topic: "sensors/7/temp", client_id: "dev-7", qos: 1, retain: false,
//!     received_ms: 1_700_000_000_000, content_type: None, payload: Some(b"21.5"),
//! };
//! let mut batch = BatchWriter::new(Vec::new(), false);
//! batch.push(&rec, [("unit", "C")].into_iter())?;
//! batch.push(&RecordRef { topic: "sensors/8/temp", ..rec }, [].into_iter())?;
//! let batch_buf = batch.finish();
//!
//! // Guest: decide.
//! let batch = Batch::parse(&batch_buf)?;
//! let mut out = VerdictWriter::new(Vec::new(), batch.len());
//! for (i, msg) in batch.iter().enumerate() {
//!     let msg = msg?;
//!     match msg.property("unit") {
//!         Some(_) => out.route(i, &[Destination::Local { topic: "celsius" }])?,
//!         None => out.drop_message(i),
//!     }
//! }
//! let verdict_buf = out.finish();
//!
//! // Host: apply.
//! let verdicts = Verdicts::parse(&verdict_buf, 2)?;
//! assert!(verdicts.is_kept(0) && !verdicts.is_kept(1));
//! let edit = verdicts.edits().next().unwrap();
//! assert_eq!(edit.routes.unwrap().collect::<Vec<_>>(), [Destination::Local { topic: "celsius" }]);
//! # Ok::<(), tern_filter_abi::AbiError>(())
//! ```
#![no_std]

extern crate alloc;

mod batch;
pub mod bytes;
mod error;
mod record;
pub mod template;
mod verdict;
mod wire;

pub use batch::{Batch, BatchWriter, Contents, RecordViews, Records};
pub use error::{AbiError, EditPart, Field, Part};
pub use record::{MessageView, Properties, RawProperties, RecordRef, RecordView};
pub use template::{
    CheckedTemplate, RenderError, Spans, Template, TemplateError, TemplatePart, TemplateRoute,
    TopicSpan,
};
pub use verdict::{
    AnyDestination, CheckedRoutes, Destination, Edit, Edits, LazyEdit, LazyEdits, LazyVerdicts,
    RawDestination, ReplacementRecord, Routes, SingleTemplate, VerdictWriter, Verdicts,
};

/// The ABI version this crate reads and writes (the first byte of both buffers).
pub const VERSION: u8 = 1;
