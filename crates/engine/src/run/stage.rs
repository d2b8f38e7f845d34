//! One stage's starts: each system once its dependencies in the stage are
//! healthy and a `maxParallel` slot is free, what a resume finds already
//! done (and does not start again), and what a failure cancels.

use super::*;

impl<S: RunStore + 'static> Engine<S> {
    /// Starts the stage's systems, each after its in-stage dependencies.
    pub(super) async fn start_stage(&self, stage: &PlannedStage) -> Result<Starts, EngineError> {
        let by_site = stage.failure_domain == FailureDomain::Site;
        // A resumed stage first finishes the rollbacks of its held sites.
        self.stop_held_sites(stage, None).await?;
        let slots = stage
            .max_parallel
            .map_or(stage.systems.len().max(1), |m| m as usize);
        let semaphore = Arc::new(Semaphore::new(slots));
        let done: HashMap<SmolStr, watch::Sender<Option<Done>>> = stage
            .systems
            .iter()
            .map(|s| (s.id.clone(), watch::channel(None).0))
            .collect();
        let mut tasks = JoinSet::new();
        let mut site_of: HashMap<tokio::task::Id, SmolStr> = HashMap::new();
        let mut of_site: HashMap<SmolStr, Vec<tokio::task::AbortHandle>> = HashMap::new();
        for sys in &stage.systems {
            if let Some(settled) = self.already(sys)? {
                done[&sys.id].send_replace(Some(settled));
                continue;
            }
            let deps: Vec<(SmolStr, watch::Receiver<Option<Done>>)> = sys
                .depends_on
                .iter()
                .filter_map(|d| done.get(d).map(|tx| (d.clone(), tx.subscribe())))
                .collect();
            let me = done[&sys.id].clone();
            let engine = self.clone();
            let semaphore = Arc::clone(&semaphore);
            let site = sys.site.clone();
            let sys = sys.clone();
            let handle = tasks.spawn(async move {
                let optional = sys.optional;
                let result = start_task(engine, sys, deps, semaphore).await;
                me.send_replace(Some(match &result {
                    Ok(Task::Healthy) => Done::Healthy,
                    Ok(Task::Blocked) => Done::Blocked,
                    Ok(Task::Failed(_)) if optional || by_site => Done::Blocked,
                    _ => Done::Stopped,
                }));
                result.map(|task| match task {
                    // An optional system's failure is journaled; it does
                    // not fail the stage.
                    Task::Failed(_) if optional => Task::Blocked,
                    task => task,
                })
            });
            site_of.insert(handle.id(), site.clone());
            of_site.entry(site).or_default().push(handle);
        }
        let mut failure: Option<String> = None;
        let mut not_started = false;
        let mut held: Vec<SmolStr> = Vec::new();
        while let Some(joined) = tasks.join_next_with_id().await {
            match joined {
                Ok((_, Ok(Task::Healthy | Task::Blocked))) => {}
                Ok((_, Ok(Task::NotStarted))) => not_started = true,
                Ok((id, Ok(Task::Failed(reason)))) if by_site => {
                    // Only this site's part of the stage fails: it is held,
                    // its starts in flight are cancelled, the rest go on.
                    let site = site_of.get(&id).cloned().unwrap_or_default();
                    if !held.contains(&site) {
                        self.hold_site(stage, &site, &reason)?;
                        for h in of_site.get(&site).into_iter().flatten() {
                            h.abort();
                        }
                        // What depends on the site's systems, elsewhere in
                        // the stage, is Blocked rather than left waiting.
                        for sys in stage.systems.iter().filter(|s| s.site == site) {
                            done[&sys.id].send_if_modified(|d| {
                                d.is_none().then(|| *d = Some(Done::Blocked)).is_some()
                            });
                        }
                        held.push(site);
                    }
                }
                Ok((_, Ok(Task::Failed(reason)))) => {
                    if failure.is_none() {
                        failure = Some(reason);
                        // Cancel the starts still in flight: dropping them
                        // kills their process groups.
                        tasks.abort_all();
                    }
                }
                Ok((_, Err(e))) => return Err(e),
                Err(e) if e.is_cancelled() => {}
                Err(e) => failure = failure.or(Some(format!("a start task failed: {e}"))),
            }
        }
        if failure.is_some() {
            self.mark_cancelled(stage, None)?;
        }
        for site in &held {
            self.mark_cancelled(stage, Some(site))?;
            let pending: Vec<String> = {
                let state = self.inner.lock();
                stage
                    .systems
                    .iter()
                    .filter(|s| &s.site == site)
                    .filter(|s| {
                        state
                            .system(&s.id)
                            .is_some_and(|st| st.phase == SystemPhase::Pending)
                    })
                    .map(|s| s.id.to_string())
                    .collect()
            };
            for id in pending {
                self.inner.blocked_by_its_site(&id, site)?;
            }
            self.stop_held_sites(stage, Some(site)).await?;
        }
        Ok(match failure {
            Some(reason) => Starts::Failed(reason),
            None if not_started => Starts::Paused,
            None => Starts::AllHealthy,
        })
    }

    /// What a system's journal already says of it in this stage, so it is
    /// not started: Healthy; an optional system that failed; Blocked. A
    /// system whose dependency in an earlier stage failed (optional) or is
    /// Blocked is journaled Blocked here, and never started.
    fn already(&self, sys: &PlannedSystem) -> Result<Option<Done>, EngineError> {
        let state = self.inner.lock();
        let me = state.system(&sys.id);
        if me.is_some_and(|s| state.is_held(s)) {
            // Its site is held in this stage: what it is stays as it is.
            let pending = me.is_some_and(|s| s.phase == SystemPhase::Pending);
            drop(state);
            if pending {
                self.inner.blocked_by_its_site(&sys.id, &sys.site)?;
            }
            return Ok(Some(Done::Blocked));
        }
        let settled = match me.map(|s| s.phase) {
            Some(SystemPhase::Healthy) => Some(Done::Healthy),
            Some(SystemPhase::Blocked) => Some(Done::Blocked),
            Some(SystemPhase::Failed) if sys.optional => Some(Done::Blocked),
            _ => None,
        };
        if settled.is_some() {
            return Ok(settled);
        }
        // A dependency in an earlier stage that is not Healthy (a failed
        // optional system, a Blocked one, one of a held site): this one
        // never starts.
        let blocker = sys.depends_on.iter().find(|d| {
            state.system(d).is_some_and(|s| {
                s.stage != me.map_or("", |m| m.stage.as_str())
                    && (s.phase != SystemPhase::Healthy || state.is_held(s))
            })
        });
        let Some(blocker) = blocker.cloned() else {
            return Ok(None);
        };
        let why = blocked_by(&state, &blocker);
        drop(state);
        self.inner
            .emit_blocking(system(&sys.id, SystemPhase::Blocked, Some(why)))?;
        Ok(Some(Done::Blocked))
    }

    /// Says what became of the starts a failure cancelled: one cancelled
    /// while verifying never started (Skipped); one cancelled mid-start
    /// may have started (Failed, and a rollback stops it). Their attempts
    /// were killed with their tasks, and are journaled as interrupted.
    pub(super) fn mark_cancelled(
        &self,
        stage: &PlannedStage,
        site: Option<&str>,
    ) -> Result<(), EngineError> {
        let cancelled: Vec<(SmolStr, SystemPhase)> = self.inner.with_cancelled(stage, site);
        let what = site.map_or_else(
            || "the stage failed".to_owned(),
            |site| format!("its site {site} was held"),
        );
        for (id, phase) in cancelled {
            self.inner.abandon_attempt(
                &id,
                &format!("cancelled: {what}; its process group was killed"),
            )?;
            let (phase, reason) = match phase {
                SystemPhase::Verifying => (
                    SystemPhase::Skipped,
                    format!("cancelled before it started: {what}"),
                ),
                _ => (SystemPhase::Failed, format!("start cancelled: {what}")),
            };
            self.inner.emit_blocking(system(&id, phase, Some(reason)))?;
        }
        Ok(())
    }
}
