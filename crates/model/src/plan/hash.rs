//! The playbook's hash, and the names of the environment variables it
//! reads: the two facts a plan states about the playbook as a whole.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io;

use sha2::{Digest, Sha256};

use crate::placeholder;
use crate::playbook::{Action, Check, Playbook, PlaybookSpec, Site, Stage, System};
use serde::Serialize;

/// Feeds bytes straight into a hasher, so hashing a large playbook needs no
/// buffer the size of its JSON.
struct HashWriter(Sha256);

impl io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The SHA-256 of the playbook's meaning: `apiVersion`, `kind`,
/// `metadata.name` and the `spec`, as canonical JSON with sites and systems
/// sorted by id and every set-like list (dependsOn, selectors, approvals)
/// sorted and deduplicated. Formatting, comments, key order, the order
/// systems are written in and labels or annotations on the metadata do not
/// change it; anything that changes what runs does.
pub fn playbook_hash(pb: &Playbook) -> String {
    use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
    use std::borrow::Cow;

    fn normalized<T: Ord>(v: &[T]) -> bool {
        v.windows(2).all(|w| w[0] < w[1])
    }
    fn sorted<T: Ord>(v: &mut Vec<T>) {
        v.sort();
        v.dedup();
    }
    // Most items are already in canonical form; only those that are not are
    // copied, so hashing a large playbook costs no second copy of it.
    fn canonical_system(s: &System) -> Cow<'_, System> {
        if normalized(&s.depends_on) {
            Cow::Borrowed(s)
        } else {
            let mut s = s.clone();
            sorted(&mut s.depends_on);
            Cow::Owned(s)
        }
    }
    fn canonical_stage(s: &Stage) -> Cow<'_, Stage> {
        let sel = &s.select;
        if [&sel.sites, &sel.tiers, &sel.systems, &s.gate.approvals]
            .iter()
            .all(|v| normalized(v))
        {
            Cow::Borrowed(s)
        } else {
            let mut s = s.clone();
            sorted(&mut s.select.sites);
            sorted(&mut s.select.tiers);
            sorted(&mut s.select.systems);
            sorted(&mut s.gate.approvals);
            Cow::Owned(s)
        }
    }
    // Destructured so that a new spec field cannot be left out of the hash.
    let PlaybookSpec {
        description,
        defaults,
        roles,
        notify,
        sites,
        systems,
        stages,
    } = &pb.spec;
    // Who may decide is part of what was reviewed, in any order written.
    let roles = roles.as_ref().map(|roles| {
        let mut roles = roles.clone();
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        for r in &mut roles {
            r.members.sort_by(|a, b| a.name.cmp(&b.name));
        }
        roles
    });
    let mut sites: Vec<&Site> = sites.iter().collect();
    sites.sort_by(|a, b| a.id.cmp(&b.id));
    let mut systems: Vec<&System> = systems.iter().collect();
    systems.sort_by(|a, b| a.id.cmp(&b.id));

    let mut w = HashWriter(Sha256::new());
    let result: Result<(), serde_json::Error> = (|| {
        let mut ser = serde_json::Serializer::new(&mut w);
        let mut top = (&mut ser).serialize_struct("Canonical", 7)?;
        top.serialize_field("apiVersion", &pb.api_version)?;
        top.serialize_field("kind", &pb.kind)?;
        top.serialize_field("name", &pb.metadata.name)?;
        top.serialize_field("description", description)?;
        top.serialize_field("defaults", defaults)?;
        // Left out when absent, so playbooks without roles keep their hash.
        if let Some(roles) = &roles {
            top.serialize_field("roles", roles)?;
        }
        // Who is told was reviewed too; without it the hash is as before.
        if !notify.is_empty() {
            top.serialize_field("notify", notify)?;
        }
        top.serialize_field("sites", &sites)?;
        top.serialize_field("systems", &SystemsInOrder(&systems))?;
        top.serialize_field("stages", &StagesInOrder(stages))?;
        SerializeStruct::end(top)
    })();
    result.expect("writing JSON into a hasher cannot fail");

    struct SystemsInOrder<'a>(&'a [&'a System]);
    impl Serialize for SystemsInOrder<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for sys in self.0 {
                seq.serialize_element(&*canonical_system(sys))?;
            }
            seq.end()
        }
    }
    struct StagesInOrder<'a>(&'a [Stage]);
    impl Serialize for StagesInOrder<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for stage in self.0 {
                seq.serialize_element(&*canonical_stage(stage))?;
            }
            seq.end()
        }
    }

    let digest = w.0.finalize();
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256:");
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Every `${env:NAME}` the playbook's actions and checks read, sorted.
pub(super) fn env_names(pb: &Playbook) -> Vec<String> {
    let mut names = BTreeSet::new();
    let mut add = |text: &str| {
        if let Ok(found) = placeholder::env_names(text) {
            names.extend(found.into_iter().map(str::to_owned));
        }
    };
    for n in &pb.spec.notify {
        add(&n.webhook.url);
    }
    for site in &pb.spec.sites {
        if let Some(file) = site
            .connect
            .ssh
            .as_ref()
            .and_then(|s| s.identity_file.as_deref())
        {
            add(file);
        }
    }
    for sys in &pb.spec.systems {
        let actions = std::iter::once(&sys.start).chain(sys.stop.as_ref());
        for action in actions {
            match action {
                Action::Exec(e) => exec_strings(e, &mut add),
                Action::Http(h) => http_strings(h, &mut add),
                Action::Kubernetes(_) | Action::Noop(_) => {}
                Action::Manual(m) => add(&m.instruction),
            }
        }
        for check in sys.verify.iter().chain(&sys.health) {
            match check {
                Check::Http(h) => http_strings(h, &mut add),
                Check::Tcp(t) => add(&t.address),
                Check::Exec(e) => exec_strings(e, &mut add),
                Check::Kubernetes(_) => {}
            }
        }
    }
    names.into_iter().collect()
}

fn exec_strings(e: &crate::playbook::Exec, add: &mut impl FnMut(&str)) {
    e.command.iter().for_each(|s| add(s));
    e.env.values().for_each(|s| add(s));
    if let Some(dir) = &e.working_dir {
        add(dir);
    }
}

fn http_strings(h: &crate::playbook::Http, add: &mut impl FnMut(&str)) {
    add(&h.url);
    h.headers.values().for_each(|s| add(s));
    for text in [&h.body, &h.body_contains].into_iter().flatten() {
        add(text);
    }
    if let Some(serde_json::Value::String(equals)) = h.json_pointer.as_ref().map(|m| &m.equals) {
        add(equals);
    }
}
