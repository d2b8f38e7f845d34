//! A simulated plant, for trying a playbook without touching anything real.
//!
//! Every system of a plan becomes a small service behind one HTTP server on
//! 127.0.0.1: `POST /systems/ID/start` starts it, `POST /systems/ID/stop`
//! stops it, and `GET /systems/ID/health` answers 200 once it has been up
//! for its `expectedDuration` divided by the drill's speed, 503 before. The
//! real engine, real probes and the real journal run against it: only the
//! plant is pretend. Faults are injected per system: one that never becomes
//! healthy, one that flaps, one that is slow.
//!
//! [`drill_plan`] rewrites a plan so that its actions and checks point at
//! the plant and its waits shrink by the speed; the order, layers, gates
//! and rollback order stay exactly those of the real plan.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;

use blackstart_model::playbook::{Action, Check, Http, Method as HttpMethod, SmolStr};
use blackstart_model::{Duration as PlanDuration, Plan};

/// A fault to inject into one system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Starts, but never becomes healthy.
    Fail,
    /// Becomes healthy, then alternates: healthy for a while, down for a while.
    Flap,
    /// Takes ten times its expected duration to become healthy.
    Slow,
}

#[derive(Debug, Clone, Copy)]
struct Sim {
    /// How long after a start the system answers healthy.
    ready_after: Duration,
    fault: Option<Fault>,
    started: Option<Instant>,
}

impl Sim {
    fn healthy(&self, now: Instant) -> bool {
        let Some(started) = self.started else {
            return false;
        };
        let up = now.saturating_duration_since(started);
        match self.fault {
            Some(Fault::Fail) => false,
            Some(Fault::Slow) => up >= self.ready_after * 10,
            Some(Fault::Flap) => {
                // Up for three periods, down for two, from the moment it is ready.
                let period = self.ready_after.max(Duration::from_millis(20));
                up >= self.ready_after
                    && (up - self.ready_after).as_millis() / period.as_millis() % 5 < 3
            }
            None => up >= self.ready_after,
        }
    }
}

/// The counts a drill's report or a test may want.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub starts: u64,
    pub stops: u64,
    pub probes: u64,
}

#[derive(Debug, Default)]
struct Shared {
    systems: HashMap<SmolStr, Sim>,
    counts: Counts,
}

/// A running plant; it stops serving when dropped.
#[derive(Debug)]
pub struct Plant {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Plant {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

fn handle(shared: &Mutex<Shared>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/systems/") else {
        return reply(StatusCode::NOT_FOUND, "no such endpoint\n");
    };
    let Some((id, what)) = rest.rsplit_once('/') else {
        return reply(StatusCode::NOT_FOUND, "no such endpoint\n");
    };
    let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let mut shared_start = false;
    let Some(sim) = shared.systems.get_mut(id) else {
        return reply(StatusCode::NOT_FOUND, "no such system\n");
    };
    let response = match (req.method(), what) {
        (&Method::POST, "start") => {
            if sim.started.is_none() {
                sim.started = Some(now);
            }
            reply(StatusCode::OK, "started\n")
        }
        (&Method::POST, "stop") => {
            sim.started = None;
            reply(StatusCode::OK, "stopped\n")
        }
        // A manual step's system: the person who confirmed it started it,
        // so its first probe finds it started.
        (&Method::GET, "health-after-manual") => {
            if sim.started.is_none() {
                sim.started = Some(now);
                shared_start = true;
            }
            if sim.healthy(now) {
                reply(StatusCode::OK, "healthy\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        (&Method::GET, "health") if sim.healthy(now) => reply(StatusCode::OK, "healthy\n"),
        (&Method::GET, "health") if sim.started.is_none() => {
            reply(StatusCode::SERVICE_UNAVAILABLE, "not started\n")
        }
        (&Method::GET, "health") => reply(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, "no such action\n"),
    };
    if shared_start {
        shared.counts.starts += 1;
    }
    match what {
        "start" => shared.counts.starts += 1,
        "stop" => shared.counts.stops += 1,
        _ => shared.counts.probes += 1,
    }
    response
}

impl Plant {
    /// Serves every system of `plan` on 127.0.0.1, healthy after its
    /// expected duration divided by `speed`, with `faults` injected.
    pub async fn start(
        plan: &Plan,
        speed: f64,
        faults: &HashMap<String, Fault>,
    ) -> std::io::Result<Plant> {
        let systems = plan
            .systems()
            .map(|(_, s)| {
                let sim = Sim {
                    ready_after: scaled(s.expected_duration, speed, Duration::ZERO),
                    fault: faults.get(s.id.as_str()).copied(),
                    started: None,
                };
                (s.id.clone(), sim)
            })
            .collect();
        let shared = Arc::new(Mutex::new(Shared {
            systems,
            counts: Counts::default(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let serving = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors, say: back off rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let shared = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let response = handle(&shared, &req);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Plant {
            addr,
            shared,
            server,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counts(&self) -> Counts {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).counts
    }

    /// Whether the plant considers the system up (started and not stopped).
    pub fn is_running(&self, id: &str) -> bool {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.systems.get(id).is_some_and(|s| s.started.is_some())
    }
}

/// `d` divided by `speed`, but never below `floor`.
fn scaled(d: PlanDuration, speed: f64, floor: Duration) -> Duration {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    // A tiny speed would overflow a Duration: wait for ever instead.
    Duration::try_from_secs_f64(d.as_secs_f64() / speed)
        .unwrap_or(Duration::MAX)
        .max(floor)
}

fn plan_duration(d: Duration) -> PlanDuration {
    PlanDuration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The plan as the drill runs it: every action and check aimed at the
/// plant, every wait divided by `speed`. Manual steps stay manual: the run
/// waits for their confirmation as a real one does (from the drill's
/// stand-in, or from people with `--manual-approvals`), and the plant counts
/// the system started once confirmed. Integrity checks are dropped: there is
/// nothing real to verify.
pub fn drill_plan(plan: &Plan, plant_url: &str, speed: f64) -> Plan {
    let mut plan = plan.clone();
    let on_drill_clock = |d: PlanDuration| plan_duration(scaled(d, speed, Duration::ZERO));
    // Every step goes to the plant: no site is reached over ssh or a context.
    plan.connections.clear();
    let http = |id: &str, what: &str, method| {
        Box::new(Http {
            url: format!("{plant_url}/systems/{id}/{what}"),
            method: Some(method),
            ..Http::default()
        })
    };
    for stage in &mut plan.stages {
        if let Some(soak) = stage.gate.soak {
            stage.gate.soak = Some(plan_duration(scaled(
                soak,
                speed,
                Duration::from_millis(50),
            )));
        }
        for sys in &mut stage.systems {
            sys.verify.clear();
            let manual_start = matches!(sys.start, Action::Manual(_));
            if !manual_start {
                sys.start = Action::Http(http(&sys.id, "start", HttpMethod::Post));
            }
            if !matches!(sys.stop, Some(Action::Manual(_))) {
                sys.stop = Some(Action::Http(http(&sys.id, "stop", HttpMethod::Post)));
            }
            let health = if manual_start {
                "health-after-manual"
            } else {
                "health"
            };
            sys.health = vec![Check::Http(http(&sys.id, health, HttpMethod::Get))];
            let ready = scaled(sys.expected_duration, speed, Duration::ZERO);
            // Probe as the plan says, sped up like everything else (every
            // 10 ms at the most often): the drill then waits for Healthy as
            // a run does, and takes what the plan's estimate says. Give the
            // start at least a few seconds or four times its expected time.
            sys.probe.initial_delay =
                plan_duration(scaled(sys.probe.initial_delay, speed, Duration::ZERO));
            sys.probe.interval =
                plan_duration(scaled(sys.probe.interval, speed, Duration::from_millis(10)));
            sys.probe.timeout = PlanDuration::from_secs(2);
            sys.start_timeout = plan_duration(
                scaled(sys.start_timeout, speed, Duration::from_secs(5)).max(ready * 4),
            );
            // The estimate on the drill's clock too, so that the room's
            // timeline sets what happened against what was planned.
            sys.expected_duration = plan_duration(ready);
            sys.estimated_start = on_drill_clock(sys.estimated_start);
        }
        stage.estimated_start = on_drill_clock(stage.estimated_start);
        stage.estimated_duration = on_drill_clock(stage.estimated_duration);
    }
    // Reminders of a waiting gate come as often as the drill's clock says.
    for n in &mut plan.notify {
        n.remind = n.remind.map(on_drill_clock);
    }
    plan.estimated_duration = on_drill_clock(plan.estimated_duration);
    plan.worst_case = plan.worst_case.map(on_drill_clock);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_change_when_a_system_is_healthy() {
        let t0 = Instant::now();
        let sim = |fault| Sim {
            ready_after: Duration::from_millis(100),
            fault,
            started: Some(t0),
        };
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(!sim(None).healthy(at(99)) && sim(None).healthy(at(100)));
        assert!(!sim(Some(Fault::Fail)).healthy(at(100_000)));
        assert!(
            !sim(Some(Fault::Slow)).healthy(at(999)) && sim(Some(Fault::Slow)).healthy(at(1000))
        );
        let flap: Vec<bool> = (0..10)
            .map(|k| sim(Some(Fault::Flap)).healthy(at(100 + k * 100 + 50)))
            .collect();
        assert_eq!(
            flap,
            [
                true, true, true, false, false, true, true, true, false, false
            ]
        );
        let idle = Sim {
            started: None,
            ..sim(None)
        };
        assert!(!idle.healthy(at(1000)));
    }

    #[test]
    fn drill_plans_keep_the_order_and_shrink_the_waits() {
        let yaml = include_str!("../../../playbooks/third-party-reconnect.yaml");
        let plan =
            Plan::build(blackstart_model::load(yaml.as_bytes()).expect("the example is valid"));
        let drill = drill_plan(&plan, "http://127.0.0.1:1", 1000.0);
        let order = |p: &Plan| {
            p.systems()
                .map(|(st, s)| (st.name.clone(), s.id.clone(), s.layer))
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&drill), order(&plan));
        let minimal = &drill.stages[2];
        assert_eq!(
            minimal.gate.soak,
            Some(PlanDuration::from_millis(86_400)),
            "24h / 1000"
        );
        let feed = &minimal.systems[0];
        assert!(
            matches!(&feed.start, Action::Http(h) if h.url == "http://127.0.0.1:1/systems/minimal-feed/start")
        );
        assert!(feed.verify.is_empty());
        assert!(
            drill
                .stages
                .iter()
                .flat_map(|s| &s.systems)
                .all(|s| s.health.len() == 1)
        );
    }
}
