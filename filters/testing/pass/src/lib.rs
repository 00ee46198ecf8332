//! A filter that keeps every message, through the SDK: the baseline for the cost of
//! crossing the boundary (packing, one call, decoding every record, form-0 verdicts).

use tern_filter::{Filter, Message, Verdict};

/// Keeps everything; accepts any config.
pub struct Pass;

impl Filter for Pass {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn filter(&mut self, _msg: &Message<'_>) -> Verdict {
        Verdict::Keep
    }
}

tern_filter::export!(Pass);

#[cfg(test)]
mod tests {
    use tern_filter::testing::{Outcome, TestMessage, run};

    use super::*;

    #[test]
    fn keeps_everything() {
        let mut pass = Pass::init("anything").unwrap();
        let msgs = [
            TestMessage::new("a").property("k", "v"),
            TestMessage::new("b").qos(2),
        ];
        assert_eq!(
            run(&mut pass, &msgs).unwrap(),
            [Outcome::kept(), Outcome::kept()]
        );
        assert_eq!(run(&mut pass, &[]).unwrap(), []);
    }
}
