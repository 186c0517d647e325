//! Task identity: `<subtopology>_<partition>`, named exactly like Kafka Streams' task ids.

use std::fmt;
use std::str::FromStr;

/// One task: a subtopology applied to one input partition. Displayed and parsed as `0_3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId {
    pub subtopology: u32,
    pub partition: i32,
}

impl TaskId {
    pub fn new(subtopology: u32, partition: i32) -> Self {
        Self {
            subtopology,
            partition,
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// Why a directory name is not a task id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a task id (expected <subtopology>_<partition>, e.g. 0_3)")]
pub struct ParseTaskIdError(pub String);

impl FromStr for TaskId {
    type Err = ParseTaskIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTaskIdError(s.to_string());
        let (sub, part) = s.split_once('_').ok_or_else(err)?;
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(sub) || !digits(part) {
            return Err(err());
        }
        Ok(TaskId::new(
            sub.parse().map_err(|_| err())?,
            part.parse().map_err(|_| err())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_kafka_streams() {
        assert_eq!(TaskId::new(0, 0).to_string(), "0_0");
        assert_eq!(TaskId::new(1, 12).to_string(), "1_12");
    }

    #[test]
    fn parses_its_own_display() {
        for id in [TaskId::new(0, 3), TaskId::new(7, 0), TaskId::new(2, 15)] {
            assert_eq!(id.to_string().parse::<TaskId>().unwrap(), id);
        }
    }

    #[test]
    fn rejects_other_directory_names() {
        for bad in [
            "", "0", "0_", "_1", "a_1", "0_b", "0_1_2", "-1_0", "0_-1", ".lock", "0 _1",
        ] {
            assert!(bad.parse::<TaskId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn orders_by_subtopology_then_partition() {
        let mut ids = vec![TaskId::new(1, 0), TaskId::new(0, 10), TaskId::new(0, 2)];
        ids.sort();
        assert_eq!(
            ids,
            vec![TaskId::new(0, 2), TaskId::new(0, 10), TaskId::new(1, 0)]
        );
    }
}
