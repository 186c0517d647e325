//! Which instance owned which task when, from the instances' logs, and overlaps between owners.

use std::collections::HashMap;

/// A span during which one instance owned a task, from its log (RFC 3339 UTC timestamps,
/// which sort as strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub instance: String,
    pub task: String,
    pub from: String,
    /// `None`: still owned when the log ended.
    pub until: Option<String>,
}

/// The ownership spans in one instance's log: a task is owned from the assignment change
/// that adds it to the one that drops it, or until the instance leaves the group.
pub fn ownership_from_log(instance: &str, log: &str) -> Vec<Ownership> {
    let mut open: HashMap<String, String> = HashMap::new();
    let mut spans = Vec::new();
    for line in log.lines() {
        let Some(stamp) = line.split_whitespace().next() else {
            continue;
        };
        let owning: Option<Vec<String>> = if let Some(rest) = line.split("-> owning [").nth(1) {
            let list = rest.split(']').next().unwrap_or_default();
            Some(
                list.split(", ")
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect(),
            )
        } else if line.contains("left the group; all tasks closed") {
            Some(Vec::new())
        } else {
            None
        };
        let Some(owning) = owning else { continue };
        let owned_before: Vec<String> = open.keys().cloned().collect();
        for task in owned_before.iter().filter(|t| !owning.contains(t)) {
            let from = open.remove(task).unwrap();
            spans.push(Ownership {
                instance: instance.to_string(),
                task: task.clone(),
                from,
                until: Some(stamp.to_string()),
            });
        }
        for task in owning {
            open.entry(task).or_insert_with(|| stamp.to_string());
        }
    }
    spans.extend(open.into_iter().map(|(task, from)| Ownership {
        instance: instance.to_string(),
        task,
        from,
        until: None,
    }));
    spans
}

/// Pairs of spans of the same task, on different instances, that overlap in time.
pub fn ownership_overlaps(spans: &[Ownership]) -> Vec<(Ownership, Ownership)> {
    let mut overlaps = Vec::new();
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let ends_after =
                |span: &Ownership, t: &str| span.until.as_deref().is_none_or(|u| u > t);
            if a.task == b.task
                && a.instance != b.instance
                && ends_after(a, &b.from)
                && ends_after(b, &a.from)
            {
                overlaps.push((a.clone(), b.clone()));
            }
        }
    }
    overlaps
}
