//! The fuzz seeds (`fuzz/seeds/parse/`, hand-written from `docs/filter-abi.md`) are valid
//! buffers of the kind their name says, so the fuzzer starts from deep inside the layout.

mod common;

use std::path::Path;

use tern_filter_abi::{Batch, Verdicts};

#[test]
fn fuzz_seeds_are_valid_buffers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/parse");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("seed directory") {
        let path = entry.expect("seed entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).expect("seed file");
        let (count, buf) = data.split_at(2);
        let count = usize::from(u16::from_le_bytes([count[0], count[1]]));
        if name.starts_with("batch-") {
            let batch = Batch::parse(buf).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!batch.is_empty(), "{name}");
            for m in batch.iter() {
                m.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            assert_eq!(common::reencode_batch(buf).as_deref(), Some(buf), "{name}");
        } else if name.starts_with("verdict-") {
            Verdicts::parse(buf, count).unwrap_or_else(|e| panic!("{name}: {e}"));
            common::check_canonical(buf, count);
        } else {
            panic!("seed {name} is neither batch-* nor verdict-*");
        }
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} seeds");
}
