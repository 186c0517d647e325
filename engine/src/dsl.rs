//! The typed DSL (`stream -> group_by_key -> count -> to_stream -> map_values -> to`), compiled
//! into one processor per task on top of the processor API.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::processor::{
    EmitContext, InputRecord, KeyState, Processor, ProcessorContext, ProcessorFactory, RecordError,
    StoreId,
};
use crate::serde::{I64Serde, Serde};

/// What the engine runs: one source topic, the stores its tasks own, and a processor factory.
#[derive(Clone)]
pub struct Topology {
    pub(crate) source_topic: String,
    pub(crate) stores: Vec<String>,
    pub(crate) sink_topics: Vec<String>,
    pub(crate) processor_factory: ProcessorFactory,
    /// The store that processing a record reads at the record's own key, if any: a batch's
    /// keys are then read from it ahead, together (see [`Topology::with_read_ahead`]).
    pub(crate) read_ahead: Option<StoreId>,
    /// How each store's values read in a query's answer (`stores[i]`'s is `store_values[i]`).
    pub(crate) store_values: Vec<StoreValues>,
}

/// What a store's values are, so that a query can answer them as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreValues {
    /// 8-byte big-endian integers (counts): a JSON number.
    I64,
    /// Anything else: a JSON string when the bytes are UTF-8, else their hex.
    Bytes,
}

impl Topology {
    /// A topology written directly against the processor API. `stores[i]` is `StoreId(i)`.
    pub fn from_processor(
        source_topic: impl Into<String>,
        stores: Vec<String>,
        sink_topics: Vec<String>,
        processor_factory: ProcessorFactory,
    ) -> Result<Self> {
        let topology = Topology {
            source_topic: source_topic.into(),
            store_values: vec![StoreValues::Bytes; stores.len()],
            stores,
            sink_topics,
            processor_factory,
            read_ahead: None,
        };
        topology.validate()?;
        Ok(topology)
    }

    /// Says that processing a record reads `store` at the record's key (as an aggregation by
    /// the input key does): the engine then reads a whole batch's keys from RocksDB in one
    /// MultiGet before processing it, instead of one lookup per record. A hint: a key read
    /// ahead but never asked for costs a lookup, and nothing else.
    pub fn with_read_ahead(mut self, store: StoreId) -> Result<Self> {
        if store.0 >= self.stores.len() {
            return Err(EngineError::Topology(format!(
                "read ahead from store {} of {}",
                store.0,
                self.stores.len()
            )));
        }
        self.read_ahead = Some(store);
        Ok(self)
    }

    /// Says what `store`'s values are, for queries (every store holds bytes unless told).
    pub fn with_store_values(mut self, store: StoreId, values: StoreValues) -> Result<Self> {
        let slot = self.store_values.get_mut(store.0).ok_or_else(|| {
            EngineError::Topology(format!("store {} of {}", store.0, self.stores.len()))
        })?;
        *slot = values;
        Ok(self)
    }

    /// What `store`'s values are, by name (`None`: no such store).
    pub(crate) fn store_values(&self, store: &str) -> Option<StoreValues> {
        let index = self.stores.iter().position(|name| name == store)?;
        Some(self.store_values[index])
    }

    /// The store processing reads at each record's key, if the topology says so.
    pub(crate) fn read_ahead(&self) -> Option<StoreId> {
        self.read_ahead
    }

    fn validate(&self) -> Result<()> {
        if self.source_topic.is_empty() {
            return Err(EngineError::Topology(
                "the source topic name is empty".into(),
            ));
        }
        for (i, store) in self.stores.iter().enumerate() {
            if crate::store::is_reserved(store) {
                return Err(EngineError::Topology(format!(
                    "`{store}` cannot name a store"
                )));
            }
            if self.stores[..i].contains(store) {
                return Err(EngineError::Topology(format!(
                    "store `{store}` is added twice"
                )));
            }
        }
        Ok(())
    }

    pub fn source_topic(&self) -> &str {
        &self.source_topic
    }

    pub fn stores(&self) -> &[String] {
        &self.stores
    }

    /// One line for logs: `input-topic -> [count-store] -> counts-topic`.
    pub fn describe(&self) -> String {
        format!(
            "{} -> [{}] -> {}",
            self.source_topic,
            self.stores.join(", "),
            self.sink_topics.join(", ")
        )
    }

    pub(crate) fn new_processor(&self) -> Box<dyn Processor> {
        (self.processor_factory)()
    }
}

/// What flows between DSL stages: a typed record, or a store entry the engine flushes (or
/// re-emits after a restore), which the stage that owns the store turns into its output (see
/// [`Processor::on_flush`]).
enum Item<K, V> {
    Record(K, V),
    Flush {
        store: StoreId,
        key: Vec<u8>,
        value: Vec<u8>,
    },
}

impl<K, V> Item<K, V> {
    /// A flushed entry passing through a stage that does not own its store.
    fn pass_flush<V2>(store: StoreId, key: Vec<u8>, value: Vec<u8>) -> Item<K, V2> {
        Item::Flush { store, key, value }
    }
}

/// Where a DSL stage works: a record being processed (the stores writable), or a store entry
/// being flushed or re-emitted (the stores read-only).
enum StageContext<'c, 'a> {
    Record(&'c mut ProcessorContext<'a>),
    Flush(&'c mut EmitContext<'a>),
}

impl StageContext<'_, '_> {
    fn forward(&mut self, topic: &str, key: &[u8], value: &[u8]) -> Result<(), RecordError> {
        match self {
            StageContext::Record(ctx) => ctx.forward(topic, key, value),
            StageContext::Flush(ctx) => ctx.forward(topic, key, value),
        }
    }
}

type Emit<K, V> =
    Box<dyn FnMut(Item<K, V>, &mut StageContext<'_, '_>) -> Result<(), RecordError> + Send>;
type Wire<K, V> = Arc<dyn Fn(Emit<K, V>) -> Box<dyn Processor> + Send + Sync>;

#[derive(Default)]
struct BuilderState {
    source_topic: Option<String>,
    stores: Vec<String>,
    sink: Option<(String, ProcessorFactory)>,
    errors: Vec<String>,
    /// The first aggregation's store: it is read at the input record's key (the DSL has no
    /// operation that changes a key).
    read_ahead: Option<StoreId>,
    /// Stores whose values are counts (8-byte integers).
    counts: Vec<StoreId>,
}

/// Starts a DSL topology. One source stream and one sink per topology.
#[derive(Default)]
pub struct StreamsBuilder {
    state: Rc<RefCell<BuilderState>>,
}

impl StreamsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `topic` with the given key and value serdes.
    pub fn stream<K: 'static, V: 'static>(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> KStream<K, V> {
        let mut state = self.state.borrow_mut();
        if state.source_topic.replace(topic.to_string()).is_some() {
            state
                .errors
                .push("only one source stream per topology is supported".into());
        }
        let key_serde: Arc<dyn Serde<K>> = Arc::new(key_serde);
        let value_serde: Arc<dyn Serde<V>> = Arc::new(value_serde);
        let source_keys = key_serde.clone();
        let wire: Wire<K, V> = Arc::new(move |downstream| {
            Box::new(SourceProcessor {
                key_serde: source_keys.clone(),
                value_serde: value_serde.clone(),
                downstream,
            })
        });
        KStream {
            builder: self.state.clone(),
            wire,
            key_serde,
        }
    }

    /// Finishes the topology.
    pub fn build(self) -> Result<Topology> {
        let state = self.state.take();
        if let Some(error) = state.errors.first() {
            return Err(EngineError::Topology(error.clone()));
        }
        let source_topic = state
            .source_topic
            .ok_or_else(|| EngineError::Topology("no source stream; call stream()".into()))?;
        let (sink_topic, processor_factory) = state
            .sink
            .ok_or_else(|| EngineError::Topology("no sink; call to() on a stream".into()))?;
        let mut topology = Topology::from_processor(
            source_topic,
            state.stores,
            vec![sink_topic],
            processor_factory,
        )?;
        for store in state.counts {
            topology = topology.with_store_values(store, StoreValues::I64)?;
        }
        match state.read_ahead {
            Some(store) => topology.with_read_ahead(store),
            None => Ok(topology),
        }
    }
}

/// Turns raw records into typed ones. Like Kafka Streams' DSL, records with a null key or
/// value are skipped (and counted) rather than passed on.
struct SourceProcessor<K, V> {
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
    downstream: Emit<K, V>,
}

impl<K: 'static, V: 'static> Processor for SourceProcessor<K, V> {
    fn process(
        &mut self,
        record: &InputRecord,
        ctx: &mut ProcessorContext<'_>,
    ) -> Result<(), RecordError> {
        let key_bytes = record.key.as_deref().ok_or(RecordError::NullKey)?;
        let value_bytes = record.value.as_deref().ok_or(RecordError::NullValue)?;
        let key =
            self.key_serde
                .deserialize(key_bytes)
                .map_err(|e| RecordError::Deserialization {
                    part: "key",
                    reason: e.0,
                })?;
        let value = self.value_serde.deserialize(value_bytes).map_err(|e| {
            RecordError::Deserialization {
                part: "value",
                reason: e.0,
            }
        })?;
        (self.downstream)(Item::Record(key, value), &mut StageContext::Record(ctx))
    }

    fn on_flush(
        &mut self,
        store: StoreId,
        key: &[u8],
        value: &[u8],
        ctx: &mut EmitContext<'_>,
    ) -> Result<(), RecordError> {
        let (key, value) = (key.to_vec(), value.to_vec());
        let flushed = Item::Flush { store, key, value };
        (self.downstream)(flushed, &mut StageContext::Flush(ctx))
    }
}

/// A stream of typed records.
pub struct KStream<K, V> {
    builder: Rc<RefCell<BuilderState>>,
    wire: Wire<K, V>,
    key_serde: Arc<dyn Serde<K>>,
}

impl<K: 'static, V: 'static> KStream<K, V> {
    /// Transforms each value, keeping the key.
    pub fn map_values<V2: 'static>(
        self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        let f = Arc::new(f);
        let upstream = self.wire;
        let wire: Wire<K, V2> = Arc::new(move |mut downstream: Emit<K, V2>| {
            let f = f.clone();
            upstream(Box::new(
                move |item: Item<K, V>, ctx: &mut StageContext<'_, '_>| {
                    let mapped = match item {
                        Item::Record(k, v) => Item::Record(k, f(v)),
                        Item::Flush { store, key, value } => {
                            Item::<K, V>::pass_flush(store, key, value)
                        }
                    };
                    downstream(mapped, ctx)
                },
            ))
        });
        KStream {
            builder: self.builder,
            wire,
            key_serde: self.key_serde,
        }
    }

    /// Groups by the existing key (no repartition needed).
    pub fn group_by_key(self) -> KGroupedStream<K, V> {
        KGroupedStream { stream: self }
    }

    /// Writes every record to `topic`, serialized with the given serdes. Ends the topology.
    pub fn to(self, topic: &str, key_serde: impl Serde<K>, value_serde: impl Serde<V>) {
        let topic = topic.to_string();
        let key_serde = Arc::new(key_serde);
        let value_serde = Arc::new(value_serde);
        let wire = self.wire;
        let sink_topic = topic.clone();
        let factory: ProcessorFactory = Arc::new(move || {
            let (topic, key_serde, value_serde) =
                (topic.clone(), key_serde.clone(), value_serde.clone());
            wire(Box::new(
                move |item: Item<K, V>, ctx: &mut StageContext<'_, '_>| {
                    match item {
                        Item::Record(k, v) => ctx.forward(
                            &topic,
                            &key_serde.serialize(&k),
                            &value_serde.serialize(&v),
                        ),
                        // A sink owns no store: a flushed entry that reaches it forwards nothing.
                        Item::Flush { .. } => Ok(()),
                    }
                },
            ))
        });
        let mut state = self.builder.borrow_mut();
        if state.sink.replace((sink_topic, factory)).is_some() {
            state
                .errors
                .push("only one sink per topology is supported".into());
        }
    }
}

/// A stream grouped by key, ready to aggregate.
pub struct KGroupedStream<K, V> {
    stream: KStream<K, V>,
}

impl<K: 'static, V: 'static> KGroupedStream<K, V> {
    /// Counts records per key in the store `store_name` (values as 8-byte big-endian i64).
    pub fn count(self, store_name: &str) -> KTable<K, i64> {
        let store = {
            let mut state = self.stream.builder.borrow_mut();
            state.stores.push(store_name.to_string());
            let store = StoreId(state.stores.len() - 1);
            state.read_ahead.get_or_insert(store);
            state.counts.push(store);
            store
        };
        let upstream = self.stream.wire;
        let key_serde = self.stream.key_serde.clone();
        let wire: Wire<K, i64> = Arc::new(move |mut downstream: Emit<K, i64>| {
            let key_serde = key_serde.clone();
            let decode_count = |bytes: &[u8]| {
                I64Serde
                    .deserialize(bytes)
                    .map_err(|e| RecordError::Failed(format!("corrupt count in store: {e}")))
            };
            upstream(Box::new(
                move |item: Item<K, V>, ctx: &mut StageContext<'_, '_>| {
                    match item {
                        Item::Record(key, _value) => {
                            let StageContext::Record(ctx) = ctx else {
                                return Err(RecordError::Failed(
                                    "an aggregation's input came from a store flush (chained aggregations are not supported)".into(),
                                ));
                            };
                            let key_bytes = key_serde.serialize(&key);
                            let previous = match ctx.read_for_update(store, &key_bytes)? {
                                // Counted before (input processed again).
                                KeyState::AlreadyApplied => return Ok(()),
                                KeyState::Current(Some(bytes)) => decode_count(&bytes)?,
                                KeyState::Current(None) => 0,
                            };
                            let count = previous + 1;
                            // Forwarded when the store flushes it (see `on_flush`).
                            ctx.put(store, &key_bytes, &I64Serde.serialize(&count))
                        }
                        // Our own store's entry: forward the count as the update it was.
                        Item::Flush {
                            store: s,
                            key,
                            value,
                        } if s == store => {
                            let typed_key = key_serde.deserialize(&key).map_err(|e| {
                                RecordError::Failed(format!("corrupt key in store: {e}"))
                            })?;
                            downstream(Item::Record(typed_key, decode_count(&value)?), ctx)
                        }
                        Item::Flush { store, key, value } => {
                            downstream(Item::<K, V>::pass_flush(store, key, value), ctx)
                        }
                    }
                },
            ))
        });
        KTable {
            stream: KStream {
                builder: self.stream.builder,
                wire,
                key_serde: self.stream.key_serde,
            },
        }
    }
}

/// The changelog of an aggregation: every update to a key.
pub struct KTable<K, V> {
    stream: KStream<K, V>,
}

impl<K: 'static, V: 'static> KTable<K, V> {
    /// The stream of updates to this table.
    pub fn to_stream(self) -> KStream<K, V> {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serde::StringSerde;

    #[test]
    fn word_count_topology_describes_itself() {
        let builder = StreamsBuilder::new();
        builder
            .stream("input-topic", StringSerde, StringSerde)
            .group_by_key()
            .count("count-store")
            .to_stream()
            .map_values(|n| n.to_string())
            .to("counts-topic", StringSerde, StringSerde);
        let topology = builder.build().unwrap();
        assert_eq!(
            topology.describe(),
            "input-topic -> [count-store] -> counts-topic"
        );
        assert_eq!(topology.stores(), ["count-store"]);
    }

    #[test]
    fn topology_without_sink_or_with_two_sources_is_refused() {
        let builder = StreamsBuilder::new();
        let _ = builder.stream::<String, String>("a", StringSerde, StringSerde);
        assert!(matches!(builder.build(), Err(EngineError::Topology(_))));

        let builder = StreamsBuilder::new();
        let _ = builder.stream::<String, String>("a", StringSerde, StringSerde);
        builder
            .stream("b", StringSerde, StringSerde)
            .to("c", StringSerde, StringSerde);
        assert!(matches!(builder.build(), Err(EngineError::Topology(_))));
    }
}
