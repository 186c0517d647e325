//! What an assignment change means for the running tasks: a pure diff, kept apart from the
//! actors so it can be tested on its own.

use std::collections::BTreeSet;

/// The tasks to start and stop for one rebalance event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentChange {
    pub start: Vec<i32>,
    pub stop: Vec<i32>,
}

/// A rebalance event as the consumer reports it, restricted to the source topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentEvent {
    /// Partitions added to this member (cooperative: incremental; eager: the whole assignment).
    Assigned(Vec<i32>),
    /// Partitions taken away after a clean handover (their tasks commit first).
    Revoked(Vec<i32>),
    /// Partitions this member lost without a handover (their tasks must not commit).
    Lost(Vec<i32>),
}

impl AssignmentChange {
    /// What to do, given the partitions that currently have tasks.
    pub fn plan(owned: &BTreeSet<i32>, event: &AssignmentEvent) -> Self {
        match event {
            AssignmentEvent::Assigned(partitions) => Self {
                start: sorted_unique(partitions.iter().filter(|p| !owned.contains(p))),
                stop: Vec::new(),
            },
            AssignmentEvent::Revoked(partitions) | AssignmentEvent::Lost(partitions) => Self {
                start: Vec::new(),
                stop: sorted_unique(partitions.iter().filter(|p| owned.contains(p))),
            },
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.stop.is_empty()
    }
}

fn sorted_unique<'a>(partitions: impl Iterator<Item = &'a i32>) -> Vec<i32> {
    partitions
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(ps: &[i32]) -> BTreeSet<i32> {
        ps.iter().copied().collect()
    }

    #[test]
    fn assigned_starts_only_new_partitions() {
        let change = AssignmentChange::plan(
            &owned(&[0, 1]),
            &AssignmentEvent::Assigned(vec![3, 1, 2, 3]),
        );
        assert_eq!(
            change,
            AssignmentChange {
                start: vec![2, 3],
                stop: vec![]
            }
        );
    }

    #[test]
    fn revoked_and_lost_stop_only_owned_partitions() {
        for event in [
            AssignmentEvent::Revoked(vec![2, 5, 0]),
            AssignmentEvent::Lost(vec![2, 5, 0]),
        ] {
            let change = AssignmentChange::plan(&owned(&[0, 1, 2]), &event);
            assert_eq!(
                change,
                AssignmentChange {
                    start: vec![],
                    stop: vec![0, 2]
                }
            );
        }
    }

    #[test]
    fn repeated_or_foreign_events_change_nothing() {
        assert!(
            AssignmentChange::plan(&owned(&[0, 1]), &AssignmentEvent::Assigned(vec![0, 1]))
                .is_empty()
        );
        assert!(AssignmentChange::plan(&owned(&[]), &AssignmentEvent::Revoked(vec![0])).is_empty());
        assert!(AssignmentChange::plan(&owned(&[1]), &AssignmentEvent::Lost(vec![])).is_empty());
    }
}
