//! Reading a stopped instance's RocksDB state from disk.

use std::collections::HashMap;
use std::path::Path;

/// The counts in every task's `store` under `<state_dir>/<application_id>/` (read-only; the
/// instance must be stopped), summed over tasks.
pub fn read_store_counts(
    state_dir: &Path,
    application_id: &str,
    store: &str,
) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    let app_dir = state_dir.join(application_id);
    for entry in std::fs::read_dir(&app_dir).unwrap().map(Result::unwrap) {
        if !entry.path().is_dir() {
            continue;
        }
        let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), entry.path()).unwrap();
        let db = rocksdb::DB::open_cf_for_read_only(
            &rocksdb::Options::default(),
            entry.path(),
            &families,
            false,
        )
        .unwrap();
        let cf = db.cf_handle(store).unwrap();
        for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (key, value) = item.unwrap();
            let (_, value) = kstreams_engine::testing::decode_changelog_value(&value);
            let count = i64::from_be_bytes(value.try_into().unwrap()) as u64;
            *counts
                .entry(String::from_utf8(key.to_vec()).unwrap())
                .or_default() += count;
        }
    }
    counts
}

/// How many of the `expected` keys' counts `stored` does not hold exactly.
pub fn wrong_counts(expected: &HashMap<String, u64>, stored: &HashMap<String, u64>) -> usize {
    expected
        .iter()
        .filter(|(key, count)| stored.get(*key) != Some(count))
        .count()
}
