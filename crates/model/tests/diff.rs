//! What `diff` reports for each kind of change to a playbook.

use blackstart_model::diff::diff;
use blackstart_model::{Plan, load};

fn plan(yaml: &str) -> Plan {
    Plan::build(load(yaml.as_bytes()).unwrap_or_else(|d| panic!("{}", d.render("test.yaml"))))
}

const BASE: &str = "\
apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: lab }
spec:
  defaults: { expectedDuration: 10s }
  sites: [ { id: dc } ]
  systems:
    - { id: net, site: dc, tier: data, start: { noop: {} } }
    - { id: db, site: dc, tier: data, dependsOn: [net], start: { exec: { command: [pg_ctl, start] } } }
    - { id: api, site: dc, tier: app, dependsOn: [db], start: { noop: {} } }
  stages:
    - { name: data, select: { tiers: [data] }, gate: { soak: 1m, approvals: [incident-commander] } }
    - { name: app, select: { tiers: [app] } }
";

#[test]
fn no_change_is_empty() {
    let d = diff(&plan(BASE), &plan(BASE));
    assert!(d.is_empty());
    assert_eq!(
        d.markdown(),
        "## Restart plan changes\n\nNo change to the restart: same stages, order, gates and systems.\n"
    );
}

#[test]
fn every_kind_of_change_is_listed() {
    let new = BASE
        .replace(
            "    - { id: api, site: dc, tier: app, dependsOn: [db], start: { noop: {} } }\n",
            "    - { id: api, site: dc, tier: data, dependsOn: [db, net], start: { noop: {} } }\n    - { id: web, site: dc, tier: app, start: { noop: {} } }\n",
        )
        .replace("pg_ctl, start", "pg_ctl, restart")
        .replace("soak: 1m, approvals: [incident-commander]", "soak: 5m, onFailure: rollback");
    let d = diff(&plan(BASE), &plan(&new));
    insta::assert_snapshot!("diff_markdown", d.markdown());
    insta::assert_snapshot!("diff_text", d.text());
}

#[test]
fn layer_changes_and_removals() {
    let new = BASE.replace("dependsOn: [net], start", "start").replace(
        "    - { id: api, site: dc, tier: app, dependsOn: [db], start: { noop: {} } }\n",
        "    - { id: api, site: dc, tier: app, start: { noop: {} } }\n",
    );
    let d = diff(&plan(BASE), &plan(&new));
    assert_eq!(d.layer_changes.len(), 1, "{d:?}");
    assert_eq!(d.layer_changes[0].system, "db");
    assert_eq!(
        (d.layer_changes[0].before, d.layer_changes[0].after),
        (1, 0)
    );
    assert_eq!(d.dependencies_removed.len(), 2);
    let removed = diff(&plan(&new), &plan(BASE));
    assert_eq!(removed.dependencies_added.len(), 2);
}
