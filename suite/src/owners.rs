//! Two owners of one partition, black-box: an old owner X frozen (SIGSTOP) in the middle of its
//! final write-out, with a new owner Y on its own volume, as the overlapping-owner tests of both
//! guarantees set them up.

use std::path::Path;
use std::time::Duration;

use kstreams_engine::testing::failpoints;

use crate::{produce_round, wait_until, App, AppOptions, Broker};

/// The scenario's applications: X, X with its final write-out held, and Y.
pub struct TwoOwners {
    pub x: AppOptions,
    pub x_held: AppOptions,
    pub y: AppOptions,
}

impl TwoOwners {
    /// `x` (options for a fresh application under `root/x`, with its own settings) gets a
    /// shutdown bound longer than any freeze; Y has the same settings but for its state dir
    /// (`root/y`) and no extra arguments. X's final write-out is held (a failpoint) once
    /// `held_at` of its changelog records are acknowledged. Their input and output topics are
    /// created with one partition.
    pub fn new(broker: &Broker, root: &Path, mut x: AppOptions, held_at: usize) -> Self {
        x.session_timeout_ms = None; // the product's default (10 s)
        x.extra_args
            .extend(["--shutdown-timeout-ms", "600000"].map(String::from));
        let y = AppOptions {
            state_dir: root.join("y").join("state"),
            extra_args: vec![],
            ..x.clone()
        };
        let mut x_held = x.clone();
        x_held.env = vec![(
            "FAILPOINTS".into(),
            format!("{}=1*return({held_at})", failpoints::WRITE_OUT_PAUSE_AFTER),
        )];
        broker.create_topic(&x.input_topic, 1);
        broker.create_topic(&x.output_topic, 1);
        TwoOwners { x, x_held, y }
    }

    /// X counts `keys` keys once; SIGTERM starts its final write-out, held once `held_at`
    /// changelog records are acknowledged (`acknowledged` reads how many are, from the
    /// broker), where SIGSTOP freezes it. Answers X, frozen.
    pub fn freeze_x_mid_write_out(
        &self,
        broker: &Broker,
        keys: usize,
        held_at: usize,
        timeout: Duration,
        acknowledged: impl Fn(&Broker, &str) -> i64,
    ) -> App {
        produce_round(broker, &self.x.input_topic, 1, keys);
        let x = App::spawn(&broker.address(), &self.x_held);
        wait_until("X processed the first round", timeout, || {
            x.next_input() >= keys as i64
        });
        let changelog = self.x.changelog_topic();
        assert_eq!(
            broker.end_offsets_uncommitted(&changelog)[0],
            0,
            "X wrote its changelog before its final write-out (an interval commit came first)"
        );
        x.signal("-TERM");
        wait_until(
            "X's write-out held with part of its changelog records acknowledged",
            timeout,
            || acknowledged(broker, &changelog) >= held_at as i64,
        );
        x.signal("-STOP");
        x
    }
}
