//! What [`export!`](crate::export) expands to call: the WIT bindings and the `init` /
//! `process` entry points over a filter held in the guest's thread-local slot. Not part of
//! the public API; filter crates reach it only through the macro.

use std::cell::{Cell, RefCell};
use std::thread::LocalKey;

pub use wit_bindgen;

#[allow(unsafe_code, reason = "generated canonical-ABI glue")]
#[allow(clippy::all, reason = "generated code")]
pub mod bindings {
    //! The `wit_bindgen` bindings for `wit/filter.wit`: the host imports, the `Guest` trait
    //! and the export macro behind [`export!`](crate::export).

    wit_bindgen::generate!({
        path: "../../wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "__export_filter_world",
        default_bindings_module: "tern_filter::__private::bindings",
        runtime_path: "tern_filter::__private::wit_bindgen::rt",
    });
}

use crate::Filter;
use bindings::{Needs, Setup, Template, TemplatePart};

/// The filter instance of one guest, created by `init`.
pub type Slot<F> = RefCell<Option<F>>;

thread_local! {
    /// The verdict buffer, kept between calls so writing verdicts does not regrow it.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The WIT `init`: builds the filter from its config (replacing any earlier instance) and
/// reports what it needs in each batch and the templates its routes name.
pub fn init<F: Filter>(slot: &'static LocalKey<Slot<F>>, config: &str) -> Result<Setup, String> {
    slot.with_borrow_mut(|slot| {
        *slot = None;
        let filter = F::init(config)?;
        let templates = filter.templates().into_iter().map(wit_template).collect();
        *slot = Some(filter);
        let mut needs = Needs::empty();
        if F::NEEDS_PAYLOAD {
            needs |= Needs::PAYLOAD;
        }
        if F::NEEDS_PROPERTIES {
            needs |= Needs::PROPERTIES;
        }
        Ok(Setup { needs, templates })
    })
}

fn wit_template(template: crate::Template) -> Template {
    Template {
        bridge: template.bridge,
        parts: template
            .parts
            .into_iter()
            .map(|part| match part {
                crate::TemplatePart::Text(text) => TemplatePart::Text(text),
                crate::TemplatePart::Span(n) => TemplatePart::Span(n),
            })
            .collect(),
    }
}

/// The WIT `process`. The returned verdicts reuse the allocation of the batch buffer, which
/// is free once the batch is decided, so a call allocates nothing when the verdicts fit.
pub fn process<F: Filter>(
    slot: &'static LocalKey<Slot<F>>,
    batch: Vec<u8>,
) -> Result<Vec<u8>, String> {
    slot.with_borrow_mut(|filter| {
        let filter = filter
            .as_mut()
            .ok_or("process called before a successful init")?;
        let scratch = SCRATCH.take();
        let verdicts = crate::process_batch(filter, &batch, scratch)?;
        let mut out = batch;
        out.clear();
        out.extend_from_slice(&verdicts);
        SCRATCH.set(verdicts);
        Ok(out)
    })
}
