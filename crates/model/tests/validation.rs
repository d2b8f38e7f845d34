//! What `validate` says about broken playbooks: each test is a small input
//! with the exact report expected for it, as a person would read it.

use blackstart_model::load;

/// The report for `yaml`, as `blackstart validate pb.yaml` prints it.
fn report(yaml: &str) -> String {
    // Systems are decoded while the file is read; every input here also
    // checks that this changes nothing a person sees.
    if let Err(why) = blackstart_model::streaming_agrees(yaml.as_bytes()) {
        panic!("decoding systems while reading changed the result: {why}\n{yaml}");
    }
    match load(yaml.as_bytes()) {
        Ok(v) => format!("valid\n{}", v.warnings().render("pb.yaml")),
        Err(d) => d.render("pb.yaml"),
    }
}

const HEAD: &str =
    "apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: { name: lab }\nspec:\n";

fn pb(body: &str) -> String {
    format!("{HEAD}{body}")
}

const SITES: &str = "  sites:\n    - { id: hq }\n    - { id: plant }\n";

#[test]
fn a_small_valid_playbook() {
    let yaml = pb(&format!(
        "{SITES}  systems:
    - {{ id: db, site: hq, tier: data, start: {{ noop: {{}} }} }}
    - {{ id: app, site: plant, dependsOn: [db], start: {{ exec: {{ command: [/bin/true] }} }}, stop: {{ noop: {{}} }} }}
  stages:
    - {{ name: data, select: {{ tiers: [data] }} }}
    - {{ name: apps, select: {{ sites: [plant] }}, gate: {{ onFailure: rollback }} }}
"
    ));
    assert_eq!(report(&yaml), "valid\n");
}

#[test]
fn kubernetes_actions_and_checks() {
    let yaml = pb(&format!(
        "{SITES}  systems:
    - id: portal
      site: hq
      start: {{ kubernetes: {{ kind: Deployment, name: dealer-portal, namespace: dealers, replicas: 3 }} }}
      stop: {{ kubernetes: {{ kind: Deployment, name: dealer-portal, namespace: dealers }} }}
      health: [ {{ kubernetes: {{ kind: Deployment, name: dealer-portal, namespace: dealers }} }} ]
    - id: parts
      site: hq
      start: {{ kubernetes: {{ kind: StatefulSet, name: parts-db, rolloutRestart: true }} }}
    - id: feed
      site: hq
      start: {{ kubernetes: {{ kind: Deployment, name: feed }} }}
    - id: both
      site: hq
      start: {{ kubernetes: {{ kind: Deployment, name: both, replicas: 1, rolloutRestart: true }} }}
    - id: odd
      site: hq
      start: {{ kubernetes: {{ kind: DaemonSet, name: Odd_Name, replicas: -1, rolloutRestart: yes }} }}
      health: [ {{ kubernetes: {{ kind: Deployment, name: odd, namespece: x }} }} ]
  stages:
    - {{ name: all, select: {{ sites: [hq] }} }}
"
    ));
    assert_eq!(
        report(&yaml),
        "\
pb.yaml:19:14: error: system `feed`: a kubernetes start needs `replicas` or `rolloutRestart`
  help: e.g. start: { kubernetes: { kind: Deployment, name: dealer-portal, replicas: 3 } }
pb.yaml:22:28: error: a kubernetes action either scales (`replicas`) or restarts (`rolloutRestart`), not both
  help: use two systems if both must happen, one depending on the other
pb.yaml:25:36: error: unknown workload kind \"DaemonSet\"; expected one of: Deployment, StatefulSet
pb.yaml:25:53: error: name \"Odd_Name\" is not a Kubernetes name
  help: use lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit
pb.yaml:25:73: error: -1 is out of range: expected a whole number from 0 to 4294967295
pb.yaml:25:93: error: `spec.systems[4].start.kubernetes.rolloutRestart`: expected true or false, found a string
pb.yaml:26:62: error: unknown field `namespece` in a kubernetes check
  help: did you mean `namespace`?
"
    );
}

#[test]
fn every_type_and_field_problem_in_one_pass() {
    let yaml = pb("  sites:
    - { id: hq, nmae: Head office }
  systems:
    - id: db
      site: hq
      expectedDuration: 10
      startTimeout: 5 minutes
      start: { exec: { command: [pg_ctl, start] } }
      health:
        - http: { url: \"http://db:8080/\", expectStatus: 999, method: FETCH }
        - ping: { address: db }
    - id: 42
      site: hq
      start: { run: {} }
  stages:
    - name: all
      select: { sites: [hq] }
      maxParallel: 0
      gate: { onFailure: retry, soak: 1h30m }
");
    assert_eq!(
        report(&yaml),
        "\
pb.yaml:6:17: error: unknown field `nmae` in a site
  help: did you mean `name`?
pb.yaml:10:25: error: bad duration 10: a unit is missing
  help: write it with a unit, like 10s or 10m
pb.yaml:11:21: error: bad duration \"5 minutes\": unknown unit (use ms, s, m or h); write it like 500ms, 30s, 10m or 1h30m
pb.yaml:14:57: error: expectStatus 999 is not an HTTP status (100 to 599)
pb.yaml:14:70: error: unknown HTTP method \"FETCH\"; expected one of: GET, HEAD, POST, PUT, PATCH, DELETE
pb.yaml:15:11: error: `ping` is not a kind of check
  help: expected one of: http, tcp, exec, kubernetes
pb.yaml:16:11: error: `spec.systems[1].id`: expected a string, found an integer
  help: quote it to make it text: \"42\"
pb.yaml:18:16: error: `run` is not a kind of action
  help: expected one of: exec, http, kubernetes, manual, noop
pb.yaml:22:20: error: maxParallel must be at least 1
pb.yaml:23:26: error: unknown onFailure \"retry\"; expected one of: rollback, pause, abort
"
    );
}

#[test]
fn missing_fields_and_wrong_shapes() {
    let yaml = pb("  sites: { id: hq }
  systems:
    - site: hq
  stages: []
");
    assert_eq!(
        report(&yaml),
        "\
pb.yaml:5:10: error: `spec.sites`: expected a list, found a mapping
pb.yaml:7:7: error: a system is missing the field `id`
pb.yaml:7:7: error: a system is missing the field `start`
"
    );
}

#[test]
fn ids_references_and_cycles() {
    let yaml = pb(&format!(
        "{SITES}    - {{ id: hq }}
  systems:
    - {{ id: db, site: hq, start: {{ noop: {{}} }} }}
    - {{ id: db, site: hq, start: {{ noop: {{}} }} }}
    - {{ id: app, site: plnat, dependsOn: [dbb, api], start: {{ noop: {{}} }} }}
    - {{ id: api, site: plant, dependsOn: [web], start: {{ noop: {{}} }} }}
    - {{ id: web, site: plant, dependsOn: [app, web], start: {{ noop: {{}} }} }}
    - {{ id: \"bad id\", site: plant, start: {{ noop: {{}} }} }}
  stages:
    - {{ name: all, select: {{ sites: [hq, plant] }} }}
"
    ));
    assert_eq!(
        report(&yaml),
        "\
pb.yaml:8:13: error: duplicate site id `hq`
  help: first defined at line 6
pb.yaml:11:13: error: duplicate system id `db`
  help: first defined at line 10
pb.yaml:12:13: error: system `app` is selected by no stage
  help: every system is started by exactly one stage: add it to a stage's select
pb.yaml:12:24: error: system `app` is at unknown site `plnat`
  help: did you mean `plant`?
pb.yaml:12:43: error: system `app` depends on unknown system `dbb`
  help: did you mean `db`?
pb.yaml:13:13: error: dependency cycle: api → web → app → api
  help: a restart needs an order: remove one of these dependsOn entries
pb.yaml:14:48: error: system `web` depends on itself
pb.yaml:15:13: error: system id \"bad id\" must start with a letter or digit and hold only letters, digits, `-`, `_` and `.`
"
    );
}

#[test]
fn stage_selection_and_order() {
    let yaml = pb(&format!(
        "{SITES}  systems:
    - {{ id: db, site: hq, tier: data, start: {{ noop: {{}} }} }}
    - {{ id: cache, site: hq, tier: data, start: {{ noop: {{}} }} }}
    - {{ id: app, site: plant, tier: app, dependsOn: [api], start: {{ exec: {{ command: [run] }} }} }}
    - {{ id: api, site: plant, tier: api, start: {{ noop: {{}} }} }}
    - {{ id: lost, site: plant, tier: batch, start: {{ noop: {{}} }} }}
  stages:
    - {{ name: data, select: {{ sites: [hq] }} }}
    - {{ name: cache, select: {{ systems: [cache, cahce] }} }}
    - {{ name: apps, select: {{ tiers: [app] }}, gate: {{ onFailure: rollback }} }}
    - {{ name: api, select: {{ tiers: [api] }} }}
    - {{ name: empty, select: {{ tiers: [nothing] }} }}
    - {{ name: all, select: {{}} }}
"
    ));
    assert_eq!(
        report(&yaml),
        "\
pb.yaml:10:13: error: system `cache` is selected by 2 stages: data, cache
  help: every system is started by exactly one stage: narrow the selectors
pb.yaml:11:13: warning: system `app` has no stop action, so rolling back stage `apps` leaves it running
  help: add `stop:` (or `stop: { noop: {} }` to say so on purpose)
pb.yaml:11:54: error: system `app` in stage `apps` depends on `api`, which starts in the later stage `api`
  help: move `api` to `apps` or an earlier stage, or `app` later
pb.yaml:13:13: error: system `lost` is selected by no stage
  help: every system is started by exactly one stage: add it to a stage's select
pb.yaml:16:49: error: stage `cache` selects unknown system `cahce`
  help: did you mean `cache`?
pb.yaml:19:30: error: stage `empty` selects no system
pb.yaml:20:28: error: stage `all` has an empty selector
  help: select by sites, tiers, systems or labels
"
    );
}

#[test]
fn yaml_syntax_and_hostile_input() {
    let cases: [(&[u8], &str); 7] = [
        (b"", "pb.yaml:1:1: error: the file is empty"),
        (
            b"   \n# only a comment\n",
            "pb.yaml:1:1: error: the file is empty",
        ),
        (
            b"\x7fELF\x02\x01\x01\x00\x00\x00",
            "pb.yaml:1:8: error: the file holds a NUL byte",
        ),
        (
            b"kind: Playbook\n\xff\xfe\n",
            "pb.yaml:2:1: error: the file is not UTF-8 text",
        ),
        (
            b"spec: [unclosed\nkind: x\n",
            "pb.yaml:2:5: error: invalid YAML",
        ),
        (
            b"a: 1\n---\nb: 2\n",
            "pb.yaml:2:1: error: the file holds more than one YAML document",
        ),
        (
            b"- just\n- a list\n",
            "pb.yaml:1:1: error: expected a mapping (the playbook), found a list",
        ),
    ];
    for (input, expected) in cases {
        let got = match load(input) {
            Ok(_) => "valid".to_owned(),
            Err(d) => d.render("pb.yaml"),
        };
        assert!(
            got.starts_with(expected),
            "input {input:?}\n got: {got}\nwant: {expected}"
        );
    }
}

#[test]
fn alias_bombs_deep_nesting_and_huge_input_are_refused() {
    let bomb = blackstart_model::synth::alias_bomb(9);
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let huge = vec![b'#'; blackstart_model::MAX_INPUT_BYTES + 1];
    for (name, input, expected) in [
        ("alias bomb", bomb.as_bytes(), "YAML nodes"),
        ("deep nesting", deep.as_bytes(), "invalid YAML"),
        ("huge input", &huge[..], "a playbook may be at most 64 MiB"),
    ] {
        let err = load(input).expect_err(name).render("pb.yaml");
        assert!(err.contains(expected), "{name}: {err}");
    }
}

#[test]
fn placeholders_are_checked_and_kept() {
    let yaml = pb(&format!(
        "{SITES}  systems:
    - id: app
      site: hq
      start: {{ http: {{ url: \"https://api/${{env:API_URL_SUFFIX}}\", headers: {{ Authorization: \"Bearer ${{vault:token}}\" }} }} }}
  stages:
    - {{ name: all, select: {{ sites: [hq] }} }}
"
    ));
    assert_eq!(
        report(&yaml),
        "pb.yaml:11:92: error: unknown placeholder `${vault:token}`: only `${env:NAME}` is supported\n"
    );
}

#[test]
fn broken_items_do_not_hide_other_problems_nor_echo() {
    // `db` cannot be read, so `app`'s dependency on it is not called unknown;
    // but `app`'s unknown site and `api`'s unknown dependency are reported in
    // the same pass as `db`'s own problem.
    let yaml = pb(&format!(
        "{SITES}  systems:
    - {{ id: db, site: hq, startTimeout: soon, start: {{ noop: {{}} }} }}
    - {{ id: app, site: hq2, dependsOn: [db, api], start: {{ noop: {{}} }} }}
    - {{ id: web, site: plant, dependsOn: [ghost], start: {{ noop: {{}} }} }}
  stages:
    - {{ name: all, select: {{ sites: [hq, plant, hq2] }} }}
"
    ));
    assert_eq!(
        report(&yaml),
        "\
pb.yaml:9:41: error: bad duration \"soon\": expected a number; write it like 500ms, 30s, 10m or 1h30m
pb.yaml:10:24: error: system `app` is at unknown site `hq2`
  help: did you mean `hq`?
pb.yaml:10:45: error: system `app` depends on unknown system `api`
  help: did you mean `app`?
pb.yaml:11:43: error: system `web` depends on unknown system `ghost`
pb.yaml:13:49: error: stage `all` selects unknown site `hq2`
  help: did you mean `hq`?
"
    );
}

#[test]
fn inherit_env_names_and_idempotent_flags() {
    let yaml = pb(&format!(
        "  defaults: {{ inheritEnv: [KUBECONFIG, 9LIVES] }}
{SITES}  systems:
    - id: db
      site: hq
      start: {{ exec: {{ command: [pg_ctl, start], inheritEnv: [PGDATA, \"PG DATA\"], idempotent: true }} }}
      stop: {{ http: {{ url: \"http://hq.example/stop\", idempotent: maybe }} }}
  stages:
    - {{ name: all, select: {{ sites: [hq] }} }}
"
    ));
    assert_eq!(
        report(&yaml),
        "pb.yaml:5:40: error: \"9LIVES\" is not an environment variable name
  help: use letters, digits and `_`, not starting with a digit, e.g. KUBECONFIG
pb.yaml:12:71: error: \"PG DATA\" is not an environment variable name
  help: use letters, digits and `_`, not starting with a digit, e.g. KUBECONFIG
pb.yaml:13:66: error: `spec.systems[0].stop.http.idempotent`: expected true or false, found a string
"
    );
}

#[test]
fn a_role_one_gate_names_like_one_others_name_is_a_likely_typo() {
    let yaml = pb(&format!(
        "{SITES}  systems:
    - {{ id: a, site: hq, tier: one, start: {{ noop: {{}} }} }}
    - {{ id: b, site: hq, tier: two, start: {{ noop: {{}} }} }}
    - {{ id: c, site: hq, tier: three, start: {{ noop: {{}} }} }}
    - {{ id: d, site: hq, tier: four, start: {{ noop: {{}} }} }}
  stages:
    - {{ name: one, select: {{ tiers: [one] }}, gate: {{ approvals: [incident-commander] }} }}
    - {{ name: two, select: {{ tiers: [two] }}, gate: {{ approvals: [incident-commander, dpo] }} }}
    - {{ name: three, select: {{ tiers: [three] }}, gate: {{ approvals: [incident-comander] }} }}
    - {{ name: four, select: {{ tiers: [four] }}, gate: {{ approvals: [dpo] }} }}
"
    ));
    assert_eq!(
        report(&yaml),
        "valid
pb.yaml:16:70: warning: role `incident-comander` is named by this gate only, and `incident-commander` by 2 others: a typo?
  help: did you mean `incident-commander`?
"
    );
}

const ALICE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKEY_ALICE alice@corp";

fn with_roles(roles: &str, gate: &str, manual_role: &str) -> String {
    pb(&format!(
        "  roles:\n{roles}{SITES}  systems:
    - {{ id: db, site: hq, tier: data, start: {{ manual: {{ instruction: Start it, role: {manual_role} }} }} }}
  stages:
    - {{ name: data, select: {{ tiers: [data] }}, gate: {{ approvals: [{gate}] }} }}
"
    ))
}

#[test]
fn declared_roles_are_checked_where_they_are_named() {
    let alice = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/keys/alice.pub"
    ))
    .expect("the test key");
    let alice = alice.trim();
    let roles = format!(
        "    - {{ name: incident-commander, members: [ {{ name: alice, key: \"{alice}\" }} ] }}\n    - {{ name: ot-engineer, members: [ {{ name: dave }} ] }}\n"
    );
    assert_eq!(
        report(&with_roles(&roles, "incident-commander", "ot-engineer")),
        "valid\n"
    );
    let report = report(&with_roles(&roles, "incident-comander", "ot-enginer"));
    assert!(report.contains("pb.yaml:14:68: error: role `incident-comander`, named by the gate of stage `data`, is not declared in spec.roles"), "{report}");
    assert!(
        report.contains("did you mean `incident-commander`?"),
        "{report}"
    );
    assert!(report.contains("pb.yaml:12:7: error: role `ot-enginer`, named by the manual step of system `db`, is not declared in spec.roles"), "{report}");
}

#[test]
fn members_and_keys_are_checked() {
    let alice = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/keys/alice.pub"
    ))
    .expect("the test key");
    let alice = alice.trim();
    // One person twice in a role, a key that is not one, and one key for
    // two names (one person could then fill two roles of a gate).
    let roles = format!(
        "    - {{ name: incident-commander, members: [ {{ name: alice, key: \"{alice}\" }}, {{ name: alice }} ] }}\n    - {{ name: ciso, members: [ {{ name: carol, key: \"{ALICE}\" }}, {{ name: mallory, key: \"{alice}\" }} ] }}\n    - {{ name: ot-engineer, members: [] }}\n"
    );
    let report = report(&with_roles(&roles, "incident-commander", "ot-engineer"));
    assert!(
        report.contains("`alice` is a member of role `incident-commander` twice"),
        "{report}"
    );
    assert!(
        report.contains("the key of `carol` is not an OpenSSH public key"),
        "{report}"
    );
    assert!(report.contains("is also enrolled for `alice`"), "{report}");
    assert!(
        report.contains("role `ot-engineer` has no members"),
        "{report}"
    );
}

#[test]
fn without_roles_manual_steps_may_name_any_role() {
    let yaml = pb(&format!(
        "{SITES}  systems:
    - {{ id: db, site: hq, tier: data, start: {{ manual: {{ instruction: Start it, role: anyone }} }} }}
  stages:
    - {{ name: data, select: {{ tiers: [data] }} }}
"
    ));
    assert_eq!(report(&yaml), "valid\n");
}

#[test]
fn on_timeout_needs_an_approval_timeout() {
    let yaml = pb(&format!(
        "{SITES}  systems:
    - {{ id: db, site: hq, tier: data, start: {{ noop: {{}} }} }}
  stages:
    - {{ name: data, select: {{ tiers: [data] }}, gate: {{ approvals: [ic], onTimeout: rollback }} }}
"
    ));
    let report = report(&yaml);
    assert!(
        report.contains("error: onTimeout needs approvalTimeout"),
        "{report}"
    );
    let ok = yaml.replace(
        "onTimeout: rollback",
        "approvalTimeout: 2h, onTimeout: rollback",
    );
    assert_eq!(self::report(&ok), "valid\n");
}

#[test]
fn retries_count_every_start_and_a_manual_start_is_never_retried() {
    let yaml = pb(&format!(
        "{SITES}  defaults: {{ retry: {{ attempts: 0 }} }}
  systems:
    - {{ id: db, site: hq, retry: {{ attempts: 2, backoff: 5s, jitter: 1s }}, start: {{ noop: {{}} }} }}
    - {{ id: plc, site: plant, optional: true, retry: {{ attempts: 3 }}, start: {{ manual: {{ instruction: Reconnect it }} }} }}
  stages:
    - {{ name: all, select: {{ sites: [hq, plant] }} }}
"
    ));
    let out = report(&yaml);
    for wanted in [
        "retry.attempts counts every start, the first included: at least 1",
        "jitter",
        "system `plc`: a manual start is not retried (a person does it)",
    ] {
        assert!(out.contains(wanted), "wanted `{wanted}` in:\n{out}");
    }
}

#[test]
fn site_connections_pin_a_real_key_and_keep_options_out_of_ssh() {
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMdBAnvXRz4FgxmUlVadVsuePkBOXOx7CMuLOVeBIS8+ host";
    let yaml = pb(&format!(
        "  sites:
    - id: hq
      connect:
        ssh: {{ host: -oProxyCommand=evil, port: 0, user: 'a b', hostKey: not-a-key }}
        kubernetes: {{}}
    - id: plant
      connect: {{ ssh: {{ host: plant.example, hostKey: \"{key}\", identityFile: \"${{env:PLANT_KEY}}\", proxy: x }} }}
  systems:
    - {{ id: db, site: hq, start: {{ noop: {{}} }} }}
  stages:
    - {{ name: all, select: {{ sites: [hq] }} }}
"
    ));
    let out = report(&yaml);
    for wanted in [
        "pb.yaml:8:22: error: connect.ssh.host `-oProxyCommand=evil` begins with `-`",
        "pb.yaml:8:49: error: connect.ssh.port must be between 1 and 65535",
        "connect.ssh.user `a b` holds a space",
        "pb.yaml:8:74: error: connect.ssh.hostKey is not an OpenSSH public key",
        "connect.kubernetes names neither a context nor a secretRef",
        "pb.yaml:9:21: error: connect.kubernetes names",
        "unknown field `proxy` in connect.ssh",
    ] {
        assert!(out.contains(wanted), "wanted `{wanted}` in:\n{out}");
    }
    // A second line in hostKey would pin a second, unseen key.
    let two = pb(&format!(
        "  sites:\n    - {{ id: hq, connect: {{ ssh: {{ host: h.example, hostKey: \"{key}\\n* ssh-ed25519 AAAAother\" }} }} }}\n  systems:\n    - {{ id: db, site: hq, start: {{ noop: {{}} }} }}\n  stages:\n    - {{ name: all, select: {{ sites: [hq] }} }}\n"
    ));
    let out = report(&two);
    assert!(
        out.contains("connect.ssh.hostKey holds a line break or control character"),
        "{out}"
    );
    // A good connection plans, with its identity file among the run's secrets.
    let good = pb(&format!(
        "  sites:
    - id: plant
      connect:
        ssh: {{ host: plant.example, port: 2222, user: restart, hostKey: \"{key}\", identityFile: \"${{env:PLANT_KEY}}\" }}
        kubernetes: {{ context: plant-prod }}
  systems:
    - {{ id: db, site: plant, start: {{ noop: {{}} }} }}
  stages:
    - {{ name: all, select: {{ sites: [plant] }} }}
"
    ));
    let plan = blackstart_model::Plan::build(load(good.as_bytes()).unwrap());
    assert_eq!(plan.env, vec!["PLANT_KEY".to_owned()]);
    let ssh = plan.connections["plant"].ssh.as_ref().unwrap();
    assert_eq!(ssh.target(), "restart@plant.example:2222");
    assert_eq!(
        plan.connections["plant"]
            .kubernetes
            .as_ref()
            .unwrap()
            .context
            .as_deref(),
        Some("plant-prod")
    );
}

/// What YAML reads differently from what was written is refused or named,
/// never taken quietly; messages name the field and quote what was
/// written, not what it reads as.
#[test]
fn the_reader_has_no_quiet_surprises() {
    let sys = |extra: &str| {
        pb(&format!(
            "{SITES}  systems:\n    - id: db\n      site: hq\n      start: {{ noop: {{}} }}\n{extra}  stages:\n    - {{ name: all, select: {{ sites: [hq] }} }}\n"
        ))
    };
    let cases: [(&str, &[&str]); 10] = [
        (
            // Columns count characters: on a line that is not ASCII, each
            // message still quotes its own value.
            "      labels: { café: 1.10, naïve: 0755 }\n",
            &[
                "`spec.systems[0].labels.café`: expected a string, found a number\n  help: quote it to make it text: \"1.10\"",
                "`spec.systems[0].labels.naïve`: expected a string, found an integer\n  help: quote it to make it text: \"0755\"",
            ],
        ),
        (
            "      labels: { version: 1.10, mode: 0755, owner: ~, empty: }\n",
            &[
                "`spec.systems[0].labels.version`: expected a string, found a number\n  help: quote it to make it text: \"1.10\"",
                "`spec.systems[0].labels.mode`: expected a string, found an integer\n  help: quote it to make it text: \"0755\"",
                "`spec.systems[0].labels.owner`: expected a string, found null\n  help: quote it to make it text: \"~\"",
                "`spec.systems[0].labels.empty`: expected a string, found nothing (an empty value)",
            ],
        ),
        (
            "      labels: { 1.10: x, on: y, true: z }\n",
            &[
                "the name `1.10` reads as a number, and a name here is text\n  help: quote it: \"1.10\"",
                "the name `true` reads as a boolean",
            ],
        ),
        (
            "      dependsOn: 3\n",
            &["`spec.systems[0].dependsOn`: expected a list, found an integer"],
        ),
        (
            "      retry: { attempts: 99999999999999999999 }\n",
            &["99999999999999999999 is out of range: expected a whole number from 0 to 4294967295"],
        ),
        (
            "      retry: { attempts: 0x-1 }\n",
            &["`spec.systems[0].retry.attempts`: expected a whole number, found a string"],
        ),
        (
            "      \"<<\": { optional: true }\n",
            &["unknown field `<<` in a system"],
        ),
        (
            "      labels: *nowhere\n",
            &["the alias `*nowhere` names no anchor defined before it"],
        ),
        (
            "      health: [ { http: { url: \"http://x\", jsonPointer: { pointer: /v, equals: .nan } } } ]\n",
            &["`.nan` is not a JSON number, so no body can equal it"],
        ),
        (
            "      labels: { <<: { a: b }, <<: { c: d } }\n",
            &[
                "duplicate key `<<`",
                "merge several mappings with one key: `<<: [*a, *b]`",
            ],
        ),
    ];
    for (extra, wanted) in cases {
        let out = report(&sys(extra));
        for w in wanted {
            assert!(out.contains(w), "for {extra:?} wanted `{w}` in:\n{out}");
        }
    }
    // `on` is text in YAML 1.2, so it is a name like any other.
    assert!(!report(&sys("      labels: { 1.10: x, on: y, true: z }\n")).contains("`on`"));
    // Typed equals: the plan keeps a number a number and text text.
    let typed = sys(
        "      health:\n        - http: { url: \"http://x\", jsonPointer: { pointer: /v, equals: 1.10 } }\n        - http: { url: \"http://x\", jsonPointer: { pointer: /v, equals: \"1.10\" } }\n",
    );
    let plan = blackstart_model::Plan::build(load(typed.as_bytes()).unwrap());
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.contains(r#""equals":1.1"#), "{json}");
    assert!(json.contains(r#""equals":"1.10""#), "{json}");
}

#[test]
fn a_tab_in_indentation_is_reported_on_its_own_line() {
    let yaml = pb("  sites:\n    - id: a\n\t  name: b\n");
    let out = report(&yaml);
    assert!(
        out.starts_with("pb.yaml:7:1: error: invalid YAML: a tab in indentation"),
        "{out}"
    );
}

/// A stage whose selector has an unreadable item is reported once, for
/// that item: not also as an empty selector, nor its systems as selected
/// by no stage.
#[test]
fn a_broken_selector_is_not_echoed_as_empty_or_unselected() {
    let yaml = pb(
        "  sites: [ { id: a } ]\n  systems:\n    - { id: s1, site: a, start: { noop: {} } }\n  stages:\n    - { name: one, select: { sites: [a, 7] } }\n",
    );
    assert_eq!(
        report(&yaml),
        "pb.yaml:9:41: error: `spec.stages[0].sites[1]`: expected a string, found an integer\n  help: quote it to make it text: \"7\"\n"
    );
}

/// A system with one broken field is reported once, for that field: stage
/// selection does not echo it as an unknown system.
#[test]
fn a_broken_system_is_not_echoed_as_unknown() {
    let yaml = pb(
        "  sites: [ { id: a } ]\n  systems:\n    - { id: s1, site: a, start: { noop: {} } }\n    - { id: s2, site: a, start: { exec: { command: [x, \"${env:bad-name}\"] } } }\n  stages:\n    - { name: one, select: { systems: [s1, s2, s3] } }\n",
    );
    let out = report(&yaml);
    assert!(
        out.contains("bad variable name in `${env:bad-name}`"),
        "{out}"
    );
    assert!(!out.contains("unknown system `s2`"), "{out}");
    assert!(
        out.contains("stage `one` selects unknown system `s3`"),
        "a really unknown one is still reported: {out}"
    );
}
