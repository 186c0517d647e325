//! What `kstreams-count` shares beyond its binary: how the local runner follows task
//! ownership across instances (the suite's scaling test measures rebalance pauses with it).

pub mod pauses;
