//! A run's journal, kept outside its RestartRun: hash-chained records in
//! ConfigMaps the RestartRun owns.
//!
//! The API server takes at most about 1.5 MiB per object, and a restart of
//! a carmaker's estate is thousands of systems, five or six records each,
//! with the whole plan in the first. In the RestartRun's status that capped
//! a run near 600 systems, and made `kubectl get -o yaml` unreadable long
//! before. So the status is a summary, and the journal lives in segments,
//! as Argo Workflows offloads node status for the same reason:
//!
//! - a segment is a ConfigMap `RUN-journal-NNNN` (NNNN from 0000), labelled
//!   with its run and owned by the RestartRun, so deleting the run deletes
//!   them; each holds at most [`SEGMENT_BYTES`] of records;
//! - a record is one data key, its sequence number zero-padded so keys sort
//!   in journal order; a record larger than a segment (the first one holds
//!   the plan) is split into parts `SEQ.PPPofNNN`, read back whole;
//! - appending is one JSON Patch that adds the key and carries the
//!   segment's resourceVersion: a writer whose view is stale gets 409, finds
//!   records it did not write, and stops (the run's history never forks);
//!   one whose answer was lost reads the segment back and finds its record;
//! - segments are read by name, in order, until one is missing, so the
//!   operator needs `get`, `create` and `patch` on ConfigMaps, never `list`.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::Value;

use blackstart_engine::Record;
use blackstart_engine::step::retry::{backoff, retry_after, transient};

/// The most bytes of records one segment holds. Far under the API
/// server's object limit on purpose: every PATCH is answered with the
/// whole object, so an append costs a segment's size on the wire and in
/// the parser, and a small segment keeps that small.
pub const SEGMENT_BYTES: usize = 64 * 1024;
/// The label that names a segment's run.
pub const RUN_LABEL: &str = "blackstart.dev/journal-of";
/// How many writes with an unknown outcome are tried again, with backoff.
const RETRIES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("cannot read journal segment {segment}: {source}")]
    Read {
        segment: String,
        source: kube::Error,
    },
    #[error("cannot write journal segment {segment}: {source}")]
    Write {
        segment: String,
        source: kube::Error,
    },
    #[error("journal segment {segment} holds {what}")]
    Corrupt { segment: String, what: String },
    /// Someone else appended: this writer stops.
    #[error(
        "journal segment {segment} holds records this operator did not write (from event {theirs}); stopped writing so the run's history does not fork"
    )]
    Fenced { segment: String, theirs: u64 },
}

/// One segment as last seen.
#[derive(Debug, Clone)]
struct Open {
    name: String,
    resource_version: Option<String>,
    bytes: usize,
    /// The last key it holds.
    last: Option<String>,
}

/// The segments of one run: read once, then appended to.
#[derive(Debug)]
pub struct Segments {
    api: Api<ConfigMap>,
    run: String,
    owner: Option<OwnerReference>,
    open: Vec<Open>,
}

pub fn segment_name(run: &str, index: usize) -> String {
    format!("{run}-journal-{index:04}")
}

fn key_of(seq: u64, part: usize, parts: usize) -> String {
    if parts == 1 {
        format!("{seq:010}")
    } else {
        format!("{seq:010}.{part:03}of{parts:03}")
    }
}

/// The sequence number a key belongs to.
fn seq_of(key: &str) -> Option<u64> {
    key.get(..10)?.parse().ok()
}

/// Splits a record's JSON into parts of at most `max` bytes, on character
/// boundaries.
fn split(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut at = max;
        while !rest.is_char_boundary(at) {
            at -= 1;
        }
        parts.push(&rest[..at]);
        rest = &rest[at..];
    }
    parts.push(rest);
    parts
}

/// The records the keys and values of every segment hold, in journal
/// order. A record split into parts is joined; one whose last parts are
/// missing at the end of the journal (a crash between two parts) was never
/// written, and is left out; anywhere else it is an error.
pub fn records_of(
    data: &BTreeMap<String, String>,
    segment: &str,
) -> Result<Vec<Record>, SegmentError> {
    let corrupt = |what: String| SegmentError::Corrupt {
        segment: segment.to_owned(),
        what,
    };
    let mut by_seq: BTreeMap<u64, Vec<(&str, &str)>> = BTreeMap::new();
    for (key, value) in data {
        let seq = seq_of(key).ok_or_else(|| corrupt(format!("a key `{key}` that is no record")))?;
        by_seq.entry(seq).or_default().push((key, value));
    }
    let last = by_seq.keys().next_back().copied();
    let mut records = Vec::with_capacity(by_seq.len());
    for (seq, parts) in by_seq {
        let expected = match parts[0].0.split_once("of") {
            Some((_, n)) => n.parse::<usize>().unwrap_or(0),
            None => 1,
        };
        if parts.len() != expected {
            if Some(seq) == last {
                break;
            }
            return Err(corrupt(format!(
                "{} of the {expected} parts of event {seq}",
                parts.len()
            )));
        }
        let text: String = parts.iter().map(|(_, v)| *v).collect();
        let record: Record = serde_json::from_str(&text)
            .map_err(|e| corrupt(format!("event {seq}, which does not read as a record: {e}")))?;
        records.push(record);
    }
    Ok(records)
}

fn pointer(path: &str) -> PointerBuf {
    PointerBuf::parse(path).expect("journal keys make valid JSON pointers")
}

impl Segments {
    /// Reads every segment of `run`; `owner` is set on the segments it
    /// creates.
    pub async fn read(
        api: Api<ConfigMap>,
        run: &str,
        owner: Option<OwnerReference>,
    ) -> Result<(Segments, Vec<Record>), SegmentError> {
        let mut data = BTreeMap::new();
        let mut open = Vec::new();
        for index in 0.. {
            let name = segment_name(run, index);
            let Some(cm) = get(&api, &name).await? else {
                break;
            };
            let held = cm.data.unwrap_or_default();
            open.push(Open {
                bytes: held.iter().map(|(k, v)| k.len() + v.len()).sum(),
                last: held.keys().next_back().cloned(),
                name,
                resource_version: cm.metadata.resource_version,
            });
            data.extend(held);
        }
        let records = records_of(&data, &segment_name(run, 0))?;
        Ok((
            Segments {
                api,
                run: run.to_owned(),
                owner,
                open,
            },
            records,
        ))
    }

    /// How many segments the journal has.
    pub fn count(&self) -> usize {
        self.open.len()
    }

    /// Appends `records`, in order: durable once this returns. Several
    /// records (a group commit) go in one request per segment they touch.
    pub async fn append(&mut self, records: &[Record]) -> Result<(), SegmentError> {
        let mut items: Vec<(String, String)> = Vec::new();
        for record in records {
            let text = serde_json::to_string(record).map_err(|e| SegmentError::Corrupt {
                segment: segment_name(&self.run, self.open.len()),
                what: format!("a record that does not serialize: {e}"),
            })?;
            let parts = split(&text, SEGMENT_BYTES / 2);
            for (k, part) in parts.iter().enumerate() {
                items.push((key_of(record.seq, k, parts.len()), (*part).to_owned()));
            }
        }
        let size = |(k, v): &(String, String)| k.len() + v.len();
        let mut i = 0;
        while i < items.len() {
            // The rest of the last segment, or a new one.
            let room = self
                .open
                .last()
                .map_or(0, |s| SEGMENT_BYTES.saturating_sub(s.bytes));
            let creating = size(&items[i]) > room;
            let cap = if creating { SEGMENT_BYTES } else { room };
            let mut j = i;
            let mut used = 0;
            while j < items.len() && used + size(&items[j]) <= cap {
                used += size(&items[j]);
                j += 1;
            }
            // A part is at most half a segment, so a new one takes it.
            let j = j.max(i + 1);
            self.put(&items[i..j], creating).await?;
            i = j;
        }
        Ok(())
    }

    /// Writes keys in one request: into the last segment, or as a new one.
    async fn put(
        &mut self,
        batch: &[(String, String)],
        creating: bool,
    ) -> Result<(), SegmentError> {
        let (mut delays, mut unsure, mut conflicts) = (backoff(), 0, 0);
        loop {
            let result = if creating {
                self.create_next(batch).await
            } else {
                self.add_to_last(batch).await
            };
            let error = match result {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let name = if creating {
                segment_name(&self.run, self.open.len())
            } else {
                self.open.last().map(|s| s.name.clone()).unwrap_or_default()
            };
            let retry = match &error {
                kube::Error::Api(s) if s.code == 409 && conflicts < 3 => {
                    conflicts += 1;
                    true
                }
                e if transient(e) && unsure < RETRIES => {
                    unsure += 1;
                    let wait = retry_after(e).unwrap_or_else(|| {
                        delays.next().unwrap_or(std::time::Duration::from_secs(2))
                    });
                    tokio::time::sleep(wait).await;
                    true
                }
                _ => false,
            };
            if !retry {
                return Err(SegmentError::Write {
                    segment: name,
                    source: error,
                });
            }
            // The outcome is unknown, or someone wrote first: look.
            if self.landed(&name, batch, creating).await? {
                return Ok(());
            }
        }
    }

    async fn add_to_last(&mut self, batch: &[(String, String)]) -> Result<(), kube::Error> {
        let Some(last) = self.open.last() else {
            return Ok(());
        };
        let mut ops = Vec::with_capacity(batch.len() + 1);
        if let Some(rv) = &last.resource_version {
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: pointer("/metadata/resourceVersion"),
                value: Value::String(rv.clone()),
            }));
        }
        for (key, value) in batch {
            ops.push(PatchOperation::Add(AddOperation {
                path: pointer(&format!("/data/{key}")),
                value: Value::String(value.clone()),
            }));
        }
        let patch = Patch::Json::<()>(json_patch::Patch(ops));
        let cm = self
            .api
            .patch(&last.name, &PatchParams::default(), &patch)
            .await?;
        let last = self.open.last_mut().expect("checked above");
        last.resource_version = cm.metadata.resource_version;
        last.bytes += batch.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        last.last = batch.last().map(|(k, _)| k.clone());
        Ok(())
    }

    async fn create_next(&mut self, batch: &[(String, String)]) -> Result<(), kube::Error> {
        let name = segment_name(&self.run, self.open.len());
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(RUN_LABEL.to_owned(), self.run.clone())].into()),
                owner_references: self.owner.clone().map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            data: Some(batch.iter().cloned().collect()),
            ..ConfigMap::default()
        };
        let made = self.api.create(&PostParams::default(), &cm).await?;
        self.open.push(Open {
            name,
            resource_version: made.metadata.resource_version,
            bytes: batch.iter().map(|(k, v)| k.len() + v.len()).sum(),
            last: batch.last().map(|(k, _)| k.clone()),
        });
        Ok(())
    }

    /// After a write that failed or whose answer was lost: whether the
    /// segment holds every key of `batch` as written (it landed; taken in).
    /// Otherwise the segment's new version is taken for another try, unless
    /// it holds records this writer did not write: then someone else
    /// appended, and this writer is fenced off.
    async fn landed(
        &mut self,
        name: &str,
        batch: &[(String, String)],
        creating: bool,
    ) -> Result<bool, SegmentError> {
        let Some(cm) = get(&self.api, name).await? else {
            // A segment being created that is not there: try again.
            return Ok(false);
        };
        let data = cm.data.unwrap_or_default();
        let seen = Open {
            name: name.to_owned(),
            resource_version: cm.metadata.resource_version,
            bytes: data.iter().map(|(k, v)| k.len() + v.len()).sum(),
            last: data.keys().next_back().cloned(),
        };
        if batch.iter().all(|(k, v)| data.get(k) == Some(v)) {
            if creating {
                self.open.push(seen);
            } else if let Some(last) = self.open.last_mut() {
                *last = seen;
            }
            return Ok(true);
        }
        // What this writer knows the segment to hold ends at `known`.
        let known = if creating {
            None
        } else {
            self.open.last().and_then(|s| s.last.clone())
        };
        if let Some(theirs) = data
            .keys()
            .find(|k| known.as_deref().is_none_or(|ours| k.as_str() > ours))
        {
            return Err(SegmentError::Fenced {
                segment: name.to_owned(),
                theirs: seq_of(theirs).unwrap_or_default(),
            });
        }
        if !creating && let Some(last) = self.open.last_mut() {
            last.resource_version = seen.resource_version;
        }
        Ok(false)
    }
}

async fn get(api: &Api<ConfigMap>, name: &str) -> Result<Option<ConfigMap>, SegmentError> {
    let mut delays = backoff();
    let mut tries = 0;
    loop {
        match api.get_opt(name).await {
            Ok(cm) => return Ok(cm),
            Err(e) if transient(&e) && tries < RETRIES => {
                tries += 1;
                let wait = retry_after(&e)
                    .unwrap_or_else(|| delays.next().unwrap_or(std::time::Duration::from_secs(2)));
                tokio::time::sleep(wait).await;
            }
            Err(source) => {
                return Err(SegmentError::Read {
                    segment: name.to_owned(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_record_is_split_on_character_boundaries_and_read_back_whole() {
        let text = "ä".repeat(1000);
        let parts = split(&text, 333);
        assert!(parts.iter().all(|p| p.len() <= 333));
        assert_eq!(parts.concat(), text);
        let keys: Vec<String> = (0..3).map(|k| key_of(7, k, 3)).collect();
        assert_eq!(
            keys,
            [
                "0000000007.000of003",
                "0000000007.001of003",
                "0000000007.002of003"
            ]
        );
        assert_eq!(seq_of(&keys[2]), Some(7));
    }

    #[test]
    fn a_record_missing_parts_is_dropped_at_the_end_and_refused_inside() {
        let record = |seq: u64| {
            let mut r = Record::next(
                None,
                blackstart_engine::Event::Run {
                    phase: blackstart_engine::RunPhase::Running,
                    reason: None,
                },
            );
            r.seq = seq;
            serde_json::to_string(&r).unwrap()
        };
        let one = record(1);
        let two = record(2);
        let (a, b) = two.split_at(10);
        let mut data = BTreeMap::new();
        data.insert(key_of(1, 0, 1), one.clone());
        data.insert(key_of(2, 0, 2), a.to_owned());
        let got = records_of(&data, "s").unwrap();
        assert_eq!(got.len(), 1, "the torn last record was never written");
        data.insert(key_of(2, 1, 2), b.to_owned());
        assert_eq!(records_of(&data, "s").unwrap().len(), 2);
        data.remove(&key_of(2, 1, 2));
        data.insert(key_of(3, 0, 1), record(3));
        assert!(records_of(&data, "s").is_err(), "a hole inside the journal");
    }
}
