//! Where standby replicas go: each instance works out, from the group's member list alone,
//! which partitions' stores it keeps warm (rendezvous hashing over the members' names, their
//! consumers' client ids, so every member agrees without talking and without a custom
//! assignor, which librdkafka cannot take, and a restarted instance keeps its place).

use std::collections::BTreeSet;
use std::hash::Hasher;
use std::time::Duration;

use crate::group_members::GroupMember;

/// How often an instance with standbys reads the group's members again (besides after each
/// of its own rebalances): a member that joins or leaves without changing this instance's
/// assignment moves standbys too.
pub(crate) const MEMBERSHIP_REFRESH: Duration = Duration::from_secs(5);

/// The names members are ranked by: their consumer's `client.id` (the instance's name and
/// query endpoint), which stays when an instance restarts, where the member id the coordinator
/// hands out does not; so a restarted pod finds the standbys it kept on its volume still placed
/// on it. A client id two members share (a restarted instance beside its not yet expired
/// predecessor, or instances that name themselves alike) is told apart by the member id, for
/// those members only. In the order of `members`.
pub(crate) fn placement_names(members: &[GroupMember]) -> Vec<String> {
    let shared = |client_id: &str| members.iter().filter(|m| m.client_id == client_id).count() > 1;
    members
        .iter()
        .map(|m| match m.client_id.as_str() {
            "" => m.id.clone(),
            name if shared(name) => format!("{name}/{}", m.id),
            name => name.to_string(),
        })
        .collect()
}

/// A member's rank for a partition: the highest ranks hold its warm copies.
fn rank(member: &str, partition: i32) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(member.as_bytes());
    hasher.write(&partition.to_be_bytes());
    hasher.finish()
}

/// The partitions `me` keeps a standby of: for each partition, the `replicas + 1` members of
/// highest rank hold a warm copy, and each of them that does not own the partition holds it as
/// a standby. The assignor does not know where the copies are, so the owner may be outside
/// them; then `replicas + 1` standbys exist for the partition, never fewer than `replicas`.
/// With `replicas >= members - 1` every member holds every partition it does not own.
pub(crate) fn standby_partitions(
    me: &str,
    members: &[String],
    partitions: usize,
    replicas: usize,
    owned: &BTreeSet<i32>,
) -> BTreeSet<i32> {
    if replicas == 0 || !members.iter().any(|m| m == me) {
        return BTreeSet::new();
    }
    (0..partitions as i32)
        .filter(|p| !owned.contains(p))
        .filter(|&p| {
            let mut ranked: Vec<(u64, &str)> =
                members.iter().map(|m| (rank(m, p), m.as_str())).collect();
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            ranked.iter().take(replicas + 1).any(|(_, m)| *m == me)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("rdkafka-member-{i}")).collect()
    }

    fn owned(partitions: &[i32]) -> BTreeSet<i32> {
        partitions.iter().copied().collect()
    }

    fn member(client_id: &str, uuid: &str) -> GroupMember {
        GroupMember {
            id: format!("{client_id}-{uuid}"),
            client_id: client_id.into(),
            endpoint: None,
        }
    }

    #[test]
    fn placement_follows_instance_names_so_a_restart_keeps_its_standbys() {
        let before = [
            member("app-pod-0-consumer", "a"),
            member("app-pod-1-consumer", "b"),
            member("app-pod-2-consumer", "c"),
        ];
        // pod-1 restarts: the coordinator gives it a new member id, its name stays.
        let after = [
            member("app-pod-0-consumer", "a"),
            member("app-pod-1-consumer", "z"),
            member("app-pod-2-consumer", "c"),
        ];
        let (names_before, names_after) = (placement_names(&before), placement_names(&after));
        assert_eq!(names_before, names_after);
        for name in &names_before {
            assert_eq!(
                standby_partitions(name, &names_before, 12, 1, &owned(&[])),
                standby_partitions(name, &names_after, 12, 1, &owned(&[])),
            );
        }
        // Beside its predecessor, not yet expired, the two are told apart; the others keep their
        // names.
        let both = [before[0].clone(), before[1].clone(), after[1].clone()];
        let names = placement_names(&both);
        assert_eq!(names[0], "app-pod-0-consumer");
        assert_ne!(names[1], names[2]);
        // A member whose client id is unknown is ranked by its member id.
        let unknown = GroupMember {
            id: "m-1".into(),
            client_id: String::new(),
            endpoint: None,
        };
        assert_eq!(placement_names(&[unknown]), ["m-1"]);
    }

    #[test]
    fn with_replicas_for_every_other_member_each_holds_all_it_does_not_own() {
        let group = members(3);
        let held = standby_partitions(&group[0], &group, 4, 2, &owned(&[1]));
        assert_eq!(held, owned(&[0, 2, 3]));
    }

    #[test]
    fn no_replicas_or_not_a_member_holds_nothing() {
        let group = members(3);
        assert!(standby_partitions(&group[0], &group, 4, 0, &owned(&[])).is_empty());
        assert!(standby_partitions("someone-else", &group, 4, 2, &owned(&[])).is_empty());
    }

    #[test]
    fn every_partition_has_at_least_the_replicas_asked_and_members_agree() {
        let group = members(5);
        for replicas in 1..=3 {
            // Any owner per partition: member p % 5 owns partition p.
            let owners: Vec<usize> = (0..12).map(|p| p % 5).collect();
            let mut copies = [0usize; 12];
            for (index, me) in group.iter().enumerate() {
                let mine: BTreeSet<i32> =
                    (0..12).filter(|p| owners[*p as usize] == index).collect();
                for p in standby_partitions(me, &group, 12, replicas, &mine) {
                    copies[p as usize] += 1;
                }
            }
            for (p, n) in copies.iter().enumerate() {
                assert!(
                    (replicas..=replicas + 1).contains(n),
                    "partition {p} has {n} standbys with {replicas} asked"
                );
            }
        }
    }

    #[test]
    fn placement_depends_on_the_members_not_their_order() {
        let group = members(4);
        let mut shuffled = group.clone();
        shuffled.reverse();
        for me in &group {
            assert_eq!(
                standby_partitions(me, &group, 8, 1, &owned(&[])),
                standby_partitions(me, &shuffled, 8, 1, &owned(&[]))
            );
        }
    }
}
