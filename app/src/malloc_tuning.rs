//! The process's glibc malloc setting: a fixed mmap threshold, so that large blocks freed by
//! RocksDB (memtable arena blocks, table and compaction buffers) go back to the system.
//!
//! glibc starts by serving blocks of 128 KiB and more with their own mapping, but raises that
//! threshold to the size of each such block freed (up to 32 MiB). After RocksDB frees its first
//! memtable, its megabyte blocks come from malloc's arenas instead, where freed space stays
//! mapped and fragmented across the arenas of many threads. With 10M keys that cost about 90
//! MiB of peak RSS (334 MiB against 243 with the threshold fixed, same throughput: see
//! docs/benchmarks.md). Fixing the threshold (`mallopt(M_MMAP_THRESHOLD)`) also stops it moving.

/// Blocks this large and larger get their own mapping, unmapped when freed.
pub const DEFAULT_MMAP_THRESHOLD_BYTES: usize = 256 << 10;

/// glibc's largest mmap threshold on 64-bit systems (`HEAP_MAX_SIZE / 2`).
const MAX_MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// Fixes glibc's mmap threshold at `bytes`; 0 leaves glibc's own adaptive threshold (or
/// `MALLOC_MMAP_THRESHOLD_` from the environment) alone. Elsewhere than glibc, nothing to do.
pub fn fix_mmap_threshold(bytes: usize) -> anyhow::Result<()> {
    if bytes > MAX_MMAP_THRESHOLD_BYTES {
        anyhow::bail!(
            "invalid setting `malloc-mmap-threshold-bytes`: {bytes} is above glibc's limit of \
             {MAX_MMAP_THRESHOLD_BYTES} (32 MiB); 0 keeps glibc's adaptive threshold"
        );
    }
    if bytes == 0 {
        return Ok(());
    }
    set_glibc_mmap_threshold(bytes)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_glibc_mmap_threshold(bytes: usize) -> anyhow::Result<()> {
    let value = libc::c_int::try_from(bytes).expect("checked against the 32 MiB limit");
    // SAFETY: mallopt only changes malloc's tunables; any value is checked by glibc itself.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, value) } == 1 {
        Ok(())
    } else {
        anyhow::bail!("invalid setting `malloc-mmap-threshold-bytes`: glibc refused {bytes}")
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_glibc_mmap_threshold(_bytes: usize) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_within_glibcs_limit_is_set_and_one_above_is_refused_by_name() {
        fix_mmap_threshold(DEFAULT_MMAP_THRESHOLD_BYTES).unwrap();
        fix_mmap_threshold(0).unwrap();
        let error = fix_mmap_threshold(MAX_MMAP_THRESHOLD_BYTES + 1)
            .unwrap_err()
            .to_string();
        assert!(error.contains("malloc-mmap-threshold-bytes"), "{error}");
        assert!(error.contains("32 MiB"), "{error}");
    }
}
