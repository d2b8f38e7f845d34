//! What each verb does to the objects: create, get, list, update, patch,
//! delete, the subresources, the CRD's defaults and the Deployment
//! controller; every change recorded for the watches.

use serde_json::{Value, json};

use super::{Change, NEVER_READY, Request, Target, World, in_namespace};

/// Bumps the resourceVersion, stamps it on `obj`, keeps it (or removes it
/// for a deletion) and adds the change to the history watches read.
pub(super) fn record(
    w: &mut World,
    target: &Target,
    key: &str,
    kind: &'static str,
    obj: &mut Value,
) {
    w.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(w.rv.to_string());
    if kind == "DELETED" {
        w.objects.remove(key);
        w.owners.remove(key);
    } else {
        w.objects.insert(key.to_owned(), obj.clone());
    }
    // History is kept for the kinds someone watches, and not forever: an
    // API server's watch cache is bounded too, and a watch from before
    // what is left gets 410.
    let collection = target.collection();
    if !w.watched.contains(&collection) {
        return;
    }
    let change = Change {
        rv: w.rv,
        collection,
        namespace: target.namespace.clone().unwrap_or_default(),
        kind,
        object: obj.clone(),
    };
    w.history.push(change);
    if w.history.len() > MAX_HISTORY {
        w.history.drain(..MAX_HISTORY / 2);
        w.compacted = w.history.first().map_or(w.rv, |c| c.rv - 1);
    }
}

/// How many changes the history keeps at most.
const MAX_HISTORY: usize = 20_000;

pub(super) fn get(w: &World, target: &Target) -> (u16, Value) {
    let key = target.key();
    let Some(obj) = w.objects.get(&key) else {
        return not_found(target);
    };
    match target.sub.as_deref() {
        Some("scale") => (200, scale_of(obj)),
        _ => (200, obj.clone()),
    }
}

/// The objects of `target`'s collection, in its namespace if it names one.
pub(super) fn members(w: &World, target: &Target) -> Vec<Value> {
    let prefix = format!("{}/", target.collection());
    w.objects
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, v)| in_namespace(v, target.namespace.as_deref()))
        .map(|(_, v)| v.clone())
        .collect()
}

pub(super) fn list(w: &World, target: &Target) -> (u16, Value) {
    let items = members(w, target);
    (
        200,
        json!({
            "apiVersion": target.api_version(),
            "kind": format!("{}List", target.kind()),
            "metadata": { "resourceVersion": w.rv.to_string() },
            "items": items,
        }),
    )
}

pub(super) fn create(w: &mut World, target: &Target, mut obj: Value) -> (u16, Value) {
    let name = match obj["metadata"]["name"].as_str() {
        Some(n) => n.to_owned(),
        None => format!(
            "{}{:05}",
            obj["metadata"]["generateName"]
                .as_str()
                .unwrap_or("object-"),
            w.rv + 1
        ),
    };
    let target = Target {
        name: Some(name.clone()),
        namespace: target
            .namespace
            .clone()
            .or_else(|| obj["metadata"]["namespace"].as_str().map(str::to_owned)),
        ..target.clone()
    };
    let key = target.key();
    if w.objects.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", target.plural),
        );
    }
    obj["apiVersion"] = json!(target.api_version());
    obj["kind"] = json!(target.kind());
    obj["metadata"]["name"] = json!(name);
    if let Some(ns) = &target.namespace {
        obj["metadata"]["namespace"] = json!(ns);
    }
    obj["metadata"]["uid"] = json!(format!("uid-{}-{}", target.plural, w.rv + 1));
    obj["metadata"]["generation"] = json!(1);
    obj["metadata"]["creationTimestamp"] = json!(now());
    defaults(&target, &mut obj);
    controllers(&target, &mut obj);
    record(w, &target, &key, "ADDED", &mut obj);
    (201, obj)
}

pub(super) fn update(w: &mut World, target: &Target, body: Value) -> (u16, Value) {
    let key = target.key();
    let Some(current) = w.objects.get(&key).cloned() else {
        return not_found(target);
    };
    let theirs = &body["metadata"]["resourceVersion"];
    if !theirs.is_null() && theirs != &current["metadata"]["resourceVersion"] {
        return conflict(target);
    }
    store_write(w, target, &key, current, body)
}

/// Keeps what a write made of an object: the status subresource changes
/// the status only, the object itself everything but the status.
pub(super) fn store_write(
    w: &mut World,
    target: &Target,
    key: &str,
    current: Value,
    written: Value,
) -> (u16, Value) {
    let mut next = current.clone();
    match target.sub.as_deref() {
        Some("status") => next["status"] = written["status"].clone(),
        Some("scale") => {
            if let Some(n) = written["spec"]["replicas"].as_i64() {
                next["spec"]["replicas"] = json!(n);
            }
        }
        _ => {
            next = written;
            next["status"] = current["status"].clone();
            next["metadata"]["uid"] = current["metadata"]["uid"].clone();
            next["metadata"]["creationTimestamp"] =
                current["metadata"]["creationTimestamp"].clone();
        }
    }
    if next["spec"] != current["spec"] {
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        next["metadata"]["generation"] = json!(generation);
    } else {
        next["metadata"]["generation"] = current["metadata"]["generation"].clone();
    }
    if next["status"].is_null()
        && let Some(m) = next.as_object_mut()
    {
        m.remove("status");
    }
    controllers(target, &mut next);
    // The last finalizer gone from an object being deleted: it goes.
    let deleting = !next["metadata"]["deletionTimestamp"].is_null();
    let finalizers = next["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    let object_target = Target {
        sub: None,
        ..target.clone()
    };
    if deleting && !finalizers {
        record(w, &object_target, key, "DELETED", &mut next);
    } else {
        record(w, &object_target, key, "MODIFIED", &mut next);
    }
    let answer = match target.sub.as_deref() {
        Some("scale") => scale_of(&next),
        _ => next,
    };
    (200, answer)
}

pub(super) fn patch(w: &mut World, target: &Target, req: &Request) -> (u16, Value) {
    let key = target.key();
    let Some(current) = w.objects.get(&key).cloned() else {
        return not_found(target);
    };
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut patched = match target.sub.as_deref() {
        Some("scale") => scale_of(&current),
        _ => current.clone(),
    };
    let ct = req.content_type.as_str();
    if ct.starts_with("application/json-patch+json") {
        let mut ops: json_patch::Patch = match serde_json::from_value(body) {
            Ok(p) => p,
            Err(e) => return status(400, "BadRequest", &e.to_string()),
        };
        // The API server reads a missing path as null in a `test`.
        ops.0.retain(|op| match op {
            json_patch::PatchOperation::Test(t) => {
                !(t.value.is_null() && patched.pointer(t.path.as_str()).is_none())
            }
            _ => true,
        });
        if let Err(e) = json_patch::patch(&mut patched, &ops) {
            return status(
                422,
                "Invalid",
                &format!("the JSON patch does not apply: {e}"),
            );
        }
    } else if ct.starts_with("application/apply-patch") {
        let manager = req.query.get("fieldManager").cloned().unwrap_or_default();
        let force = req.query.get("force").is_some_and(|v| v == "true");
        let owners = w.owners.entry(key.clone()).or_default();
        let mut fields = Vec::new();
        leaves(&body, String::new(), &mut fields);
        if !force {
            for (path, value) in &fields {
                if path.starts_with("/metadata") || path == "/apiVersion" || path == "/kind" {
                    continue;
                }
                if let Some(owner) = owners.get(path)
                    && owner != &manager
                    && patched.pointer(path) != Some(value)
                {
                    return status(
                        409,
                        "Conflict",
                        &format!("Apply failed with 1 conflict: conflict with \"{owner}\": {path}"),
                    );
                }
            }
        }
        for (path, _) in &fields {
            owners.insert(path.clone(), manager.clone());
        }
        json_patch::merge(&mut patched, &body);
    } else {
        // Merge and strategic merge: the objects served here have no list
        // that strategic merge would merge by key.
        json_patch::merge(&mut patched, &body);
        let manager = req.query.get("fieldManager").cloned().unwrap_or_default();
        let mut fields = Vec::new();
        leaves(&body, String::new(), &mut fields);
        let owners = w.owners.entry(key.clone()).or_default();
        for (path, value) in fields {
            if value.is_null() {
                owners.remove(&path);
            } else {
                owners.insert(path, manager.clone());
            }
        }
    }
    let theirs = &patched["metadata"]["resourceVersion"];
    if !theirs.is_null() && theirs != &current["metadata"]["resourceVersion"] {
        return conflict(target);
    }
    store_write(w, target, &key, current, patched)
}

pub(super) fn delete(w: &mut World, target: &Target) -> (u16, Value) {
    let key = target.key();
    let Some(mut obj) = w.objects.get(&key).cloned() else {
        return not_found(target);
    };
    let finalizers = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if finalizers {
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(now());
            record(w, target, &key, "MODIFIED", &mut obj);
        }
    } else {
        record(w, target, &key, "DELETED", &mut obj);
    }
    (200, obj)
}

/// Every leaf of a patch, as a JSON pointer and its value.
pub(super) fn leaves(v: &Value, at: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                leaves(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => out.push((at, v.clone())),
    }
}

/// What the API server fills in from the RestartRun CRD's defaults.
pub(super) fn defaults(target: &Target, obj: &mut Value) {
    if target.plural == "restartruns" {
        for list in ["approvals", "denials", "confirmations"] {
            if obj["spec"][list].is_null() {
                obj["spec"][list] = json!([]);
            }
        }
    }
}

/// The Deployment controller: a workload's status catches up with its
/// spec at once, except that a never-ready one's pods never become ready.
pub(super) fn controllers(target: &Target, obj: &mut Value) {
    if matches!(target.plural.as_str(), "deployments" | "statefulsets") {
        settle_workload(obj);
    }
}

/// A workload's status as its controller makes it: caught up with the
/// spec at once, except a never-ready one's pods. The operator's mocked API
/// server uses it too.
pub fn settle_workload(obj: &mut Value) {
    let desired = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let never = obj["metadata"]["annotations"][NEVER_READY] == json!("true");
    let ready = if never { 0 } else { desired };
    obj["status"] = json!({
        "observedGeneration": obj["metadata"]["generation"],
        "replicas": desired,
        "updatedReplicas": desired,
        "readyReplicas": ready,
        "availableReplicas": ready,
    });
}

pub(super) fn scale_of(obj: &Value) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
        },
        "spec": { "replicas": obj["spec"]["replicas"] },
        "status": { "replicas": obj["status"]["replicas"] },
    })
}

pub(super) fn now() -> String {
    // Seconds since the epoch as an RFC 3339 time, without a date crate.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m, s) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

pub(super) fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

pub(super) fn not_found(target: &Target) -> (u16, Value) {
    status(
        404,
        "NotFound",
        &format!(
            "{} \"{}\" not found",
            target.plural,
            target.name.as_deref().unwrap_or("")
        ),
    )
}

pub(super) fn conflict(target: &Target) -> (u16, Value) {
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
            target.plural,
            target.name.as_deref().unwrap_or("")
        ),
    )
}
