//! The playbook's frame: its metadata, defaults, sites, systems and
//! stages, each decoded field by field with the positions validation needs.

use super::*;

impl Decode for Playbook {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "the playbook", cx)?;
        let api_version: Option<At<String>> = f.req("apiVersion", cx);
        let kind: Option<At<String>> = f.req("kind", cx);
        let metadata = f.req("metadata", cx);
        let spec = f.req("spec", cx);
        f.finish(cx);
        if let Some(At(v, pos)) = &api_version
            && v != API_VERSION
        {
            cx.diags.push(
                Diagnostic::error(*pos, format!("unsupported apiVersion {v:?}"))
                    .with_help(format!("this blackstart reads `apiVersion: {API_VERSION}`")),
            );
        }
        if let Some(At(k, pos)) = &kind
            && k != KIND
        {
            cx.diags.push(
                Diagnostic::error(*pos, format!("kind {k:?} is not a playbook"))
                    .with_help(format!("expected `kind: {KIND}`")),
            );
        }
        Some(Playbook {
            api_version: api_version?.0,
            kind: kind?.0,
            metadata: metadata?,
            spec: spec?,
        })
    }
}

impl Decode for Metadata {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "metadata", cx)?;
        let name = f.req("name", cx);
        let namespace = f.opt("namespace", cx);
        let labels = f.or_default("labels", cx);
        let annotations = f.or_default("annotations", cx);
        f.finish(cx);
        Some(Metadata {
            name: name?,
            namespace,
            labels,
            annotations,
        })
    }
}

impl Decode for PlaybookSpec {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "spec", cx)?;
        let description = f.opt("description", cx);
        let defaults = f.or_default("defaults", cx);
        let roles = f.opt("roles", cx);
        let notify = f.or_default("notify", cx);
        let sites = f
            .req_node("sites", cx)
            .and_then(|n| cx.at(Seg::Field("sites"), |cx| items(n, ItemKind::Site, cx)));
        let systems = f
            .req_node("systems", cx)
            .and_then(|n| cx.at(Seg::Field("systems"), |cx| items(n, ItemKind::System, cx)));
        let stages = f
            .req_node("stages", cx)
            .and_then(|n| cx.at(Seg::Field("stages"), |cx| items(n, ItemKind::Stage, cx)));
        f.finish(cx);
        Some(PlaybookSpec {
            description,
            defaults,
            roles,
            notify,
            sites: sites?,
            systems: systems?,
            stages: stages?,
        })
    }
}

impl Decode for Notify {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a notification", cx)?;
        let webhook = f.req("webhook", cx);
        let on: Vec<NotifyOn> = f
            .get("on")
            .and_then(|n| {
                cx.at(Seg::Field("on"), |cx| {
                    let Some(items) = cx.tree.seq(n) else {
                        cx.error(
                            n.pos,
                            "`on` is a list of happenings, e.g. [gate-waiting, stage-failed]",
                        );
                        return None;
                    };
                    Some(
                        items
                            .iter()
                            .filter_map(|i| {
                                named(i, "notification", &NotifyOn::NAMES, NotifyOn::from_name, cx)
                            })
                            .collect(),
                    )
                })
            })
            .unwrap_or_default();
        let remind: Option<At<Duration>> = f.opt("remind", cx);
        f.finish(cx);
        if let Some(At(d, pos)) = &remind
            && *d < Duration::from_secs(60)
        {
            cx.error(
                *pos,
                format!("remind: {d} is more often than a room can read; at least 1m"),
            );
        }
        if let Some(At(_, pos)) = &remind
            && !on.is_empty()
            && !on.contains(&NotifyOn::GateWaiting)
        {
            cx.error(*pos, "remind repeats gate-waiting, which `on` leaves out");
        }
        Some(Notify {
            webhook: webhook?,
            on,
            remind: remind.map(|At(d, _)| d),
        })
    }
}

impl Decode for Webhook {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a webhook", cx)?;
        let url: Option<At<String>> = f.req("url", cx);
        f.finish(cx);
        let At(url, pos) = url?;
        let literal = !url.contains("${env:");
        if literal {
            cx.diags.push(
                Diagnostic::error(pos, "a webhook URL is written into the playbook, the plan and every review of them; it usually carries a token")
                    .with_help("give it through the environment: `url: \"${env:INCIDENT_WEBHOOK}\"` (the value is redacted everywhere)"),
            );
            return None;
        }
        if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with("${env:"))
        {
            cx.error(pos, "a webhook URL starts with https:// or http://");
            return None;
        }
        Some(Webhook { url })
    }
}

impl Decode for Defaults {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "defaults", cx)?;
        let d = Defaults {
            start_timeout: f.opt("startTimeout", cx),
            expected_duration: f.opt("expectedDuration", cx),
            probe: f.or_default("probe", cx),
            inherit_env: env_names_at(&mut f, cx),
            retry: f.opt("retry", cx),
        };
        f.finish(cx);
        Some(d)
    }
}

impl Decode for Retry {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "retry", cx)?;
        let attempts: Option<u32> = f.req("attempts", cx);
        let backoff = f.opt("backoff", cx);
        f.finish(cx);
        let attempts = attempts?;
        if attempts == 0 {
            cx.error(
                node.pos,
                "retry.attempts counts every start, the first included: at least 1",
            );
            return None;
        }
        Some(Retry { attempts, backoff })
    }
}

impl Decode for ProbeSettings {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "probe settings", cx)?;
        let p = ProbeSettings {
            initial_delay: f.opt("initialDelay", cx),
            interval: f.opt("interval", cx),
            timeout: f.opt("timeout", cx),
            success_threshold: f.opt("successThreshold", cx),
            failure_threshold: f.opt("failureThreshold", cx),
        };
        f.finish(cx);
        for (value, name) in [
            (p.success_threshold, "successThreshold"),
            (p.failure_threshold, "failureThreshold"),
        ] {
            if value == Some(0) {
                cx.error(node.pos, format!("{name} must be at least 1"));
            }
        }
        if p.interval == Some(Duration::ZERO) {
            cx.error(node.pos, "interval must be longer than 0s");
        }
        Some(p)
    }
}

impl Decode for Site {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a site", cx)?;
        let id: Option<At<String>> = f.req("id", cx);
        let name = f.opt("name", cx);
        let labels = f.or_default("labels", cx);
        let connect: Option<(Connect, Option<Pos>)> = f.opt("connect", cx);
        f.finish(cx);
        let At(id, id_pos) = id?;
        let (connect, ssh) = connect.unwrap_or_default();
        Some(Site {
            id,
            name,
            labels,
            connect,
            src: SiteSrc {
                node: node.pos,
                id: id_pos,
                ssh,
            },
        })
    }
}

impl Decode for System {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a system", cx)?;
        let id: Option<At<SmolStr>> = f.req("id", cx);
        let name = f.opt("name", cx);
        let site: Option<At<SmolStr>> = f.req("site", cx);
        let tier = f.opt("tier", cx);
        let labels = f.or_default("labels", cx);
        let depends_on: Option<Placed<SmolStr>> = f.opt("dependsOn", cx);
        let expected_duration = f.opt("expectedDuration", cx);
        let start_timeout = f.opt("startTimeout", cx);
        let probe = f.or_default("probe", cx);
        let verify = f.or_default("verify", cx);
        let start: Option<At<Action>> = f.req("start", cx);
        let stop = f.opt("stop", cx);
        let health = f.or_default("health", cx);
        let optional = f.or_default("optional", cx);
        let retry: Option<At<Retry>> = f.opt("retry", cx);
        f.finish(cx);
        let (At(id, id_pos), At(site, site_pos)) = (id?, site?);
        let At(start, start_pos) = start?;
        if let Action::Kubernetes(k) = &start
            && k.replicas.is_none()
            && !k.rollout_restart
        {
            cx.diags.push(
                Diagnostic::error(
                    start_pos,
                    format!("system `{id}`: a kubernetes start needs `replicas` or `rolloutRestart`"),
                )
                .with_ids([id.clone()])
                .with_help("e.g. start: { kubernetes: { kind: Deployment, name: dealer-portal, replicas: 3 } }"),
            );
            return None;
        }
        if let (Some(At(_, at)), Action::Manual(_)) = (&retry, &start) {
            cx.diags.push(
                Diagnostic::error(
                    *at,
                    format!("system `{id}`: a manual start is not retried (a person does it)"),
                )
                .with_ids([id.clone()])
                .with_help("remove `retry` from this system"),
            );
            return None;
        }
        let retry = retry.map(|At(r, _)| r);
        let Placed(depends_on, dep_pos) = depends_on.unwrap_or_default();
        Some(System {
            id,
            name,
            site,
            tier,
            labels,
            depends_on,
            expected_duration,
            start_timeout,
            probe,
            verify,
            start,
            stop,
            health,
            optional,
            retry,
            src: SystemSrc {
                node: node.pos,
                id: id_pos,
                site: site_pos,
                depends_on: dep_pos,
            },
        })
    }

    fn taken(early: Early) -> Result<Self, Option<String>> {
        early
    }

    fn all_taken(taken: &mut Vec<Early>, broken: &mut Broken) -> Option<Vec<Self>> {
        // In place: the vector of results becomes the vector of systems.
        let systems = std::mem::take(taken)
            .into_iter()
            .filter_map(|early| match early {
                Ok(system) => Some(system),
                Err(Some(id)) => {
                    broken.systems.push(id);
                    None
                }
                Err(None) => {
                    broken.unnamed_systems += 1;
                    None
                }
            })
            .collect();
        Some(systems)
    }
}

impl Decode for Stage {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a stage", cx)?;
        let name: Option<At<String>> = f.req("name", cx);
        let description = f.opt("description", cx);
        let select_node = f.get("select");
        let max_parallel: Option<At<u32>> = f.opt("maxParallel", cx);
        let gate: Option<GateWithSrc> = f.opt("gate", cx);
        let failure_domain = f
            .get("failureDomain")
            .and_then(|n| {
                named(
                    n,
                    "failureDomain",
                    &FailureDomain::NAMES,
                    FailureDomain::from_name,
                    cx,
                )
            })
            .unwrap_or_default();
        f.finish(cx);
        if select_node.is_none() {
            cx.error(node.pos, "a stage is missing the field `select`");
        }
        let (select, mut src) = decode_selector(select_node?, cx)?;
        let At(name, name_pos) = name?;
        let max_parallel = match max_parallel {
            Some(At(0, pos)) => {
                cx.error(pos, "maxParallel must be at least 1");
                None
            }
            other => other.map(|At(n, _)| n),
        };
        let GateWithSrc { gate, approvals } = gate.unwrap_or_default();
        src.node = node.pos;
        src.name = name_pos;
        src.approvals = approvals;
        Some(Stage {
            name,
            description,
            select,
            max_parallel,
            gate,
            failure_domain,
            src,
        })
    }
}

fn decode_selector<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<(Selector, StageSrc)> {
    let mut f = Fields::of(node, "a stage selector", cx)?;
    let sites: Result<Option<Placed<String>>, ()> = f.opt_or_broken("sites", cx);
    let tiers: Result<Option<Placed<String>>, ()> = f.opt_or_broken("tiers", cx);
    let systems: Result<Option<Placed<String>>, ()> = f.opt_or_broken("systems", cx);
    let labels = f.or_default("labels", cx);
    f.finish(cx);
    // A list that could not be read would leave the selector selecting
    // less than was written (or nothing, "an empty selector"), and its
    // systems "selected by no stage": the stage is broken instead, and the
    // checks keep quiet about what it would have selected.
    let (Ok(sites), Ok(tiers), Ok(systems)) = (sites, tiers, systems) else {
        return None;
    };
    let Placed(sites, site_pos) = sites.unwrap_or_default();
    let Placed(tiers, tier_pos) = tiers.unwrap_or_default();
    let Placed(systems, system_pos) = systems.unwrap_or_default();
    Some((
        Selector {
            sites,
            tiers,
            systems,
            labels,
        },
        StageSrc {
            select: node.pos,
            sites: site_pos,
            tiers: tier_pos,
            systems: system_pos,
            ..StageSrc::default()
        },
    ))
}

/// A gate and the positions of its approval roles, which live on the stage.
#[derive(Default)]
struct GateWithSrc {
    gate: Gate,
    approvals: Vec<Pos>,
}

impl Decode for GateWithSrc {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a gate", cx)?;
        let soak = f.opt("soak", cx);
        let approvals: Option<Placed<String>> = f.opt("approvals", cx);
        let on_failure = f
            .get("onFailure")
            .and_then(|n| named(n, "onFailure", &OnFailure::NAMES, OnFailure::from_name, cx));
        let approval_timeout: Option<Duration> = f.opt("approvalTimeout", cx);
        let on_timeout_node = f.get("onTimeout");
        let on_timeout = on_timeout_node
            .and_then(|n| named(n, "onTimeout", &OnFailure::NAMES, OnFailure::from_name, cx));
        f.finish(cx);
        if let (Some(n), None) = (on_timeout_node, approval_timeout) {
            cx.error(
                n.pos,
                "onTimeout needs approvalTimeout: without a timeout nothing times out",
            );
        }
        let Placed(approvals, approval_pos) = approvals.unwrap_or_default();
        Some(GateWithSrc {
            gate: Gate {
                soak,
                approvals,
                on_failure: on_failure.unwrap_or_default(),
                approval_timeout,
                on_timeout,
            },
            approvals: approval_pos,
        })
    }
}
