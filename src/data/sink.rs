//! Where a format's reader hands what it reads: each good record with its
//! line and schema, and each problem with its line. The readers (`jsonl`,
//! `json`, `table`, `text`) know only this trait and the record types; the
//! checks that span records (in `read`) sit behind it.

use crate::data::record::{Record, Schema};

/// Takes the records and problems a reader finds, in file order.
pub(crate) trait RecordSink {
    /// A record of `schema` that starts on `line` and parsed well.
    fn record(&mut self, line: usize, schema: Schema, record: Record);

    /// A problem on `line`, with the reason a person reads.
    fn problem(&mut self, line: usize, reason: String);
}
