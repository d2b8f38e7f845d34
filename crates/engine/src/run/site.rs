//! Sites: a failure held to its site (`failureDomain: site`), and where a
//! site's steps go (`connect`: its host over ssh, its own cluster).

use super::*;

impl<S: RunStore + 'static> Engine<S> {
    /// A failure at `site` in a stage whose failure domain is the site:
    /// journaled, with what a rollback of it will stop, before anything
    /// of it is stopped.
    pub(super) fn hold_site(
        &self,
        stage: &PlannedStage,
        site: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let policy = stage.gate.on_failure;
        let systems = match policy {
            OnFailure::Rollback => {
                let state = self.inner.lock();
                stage
                    .rollback_order
                    .iter()
                    .filter(|id| {
                        state.system(id).is_some_and(|s| {
                            s.site == site
                                && (s.started
                                    || matches!(
                                        s.phase,
                                        SystemPhase::Verifying | SystemPhase::Starting
                                    ))
                        })
                    })
                    .map(SmolStr::to_string)
                    .collect()
            }
            OnFailure::Pause | OnFailure::Abort => Vec::new(),
        };
        self.inner.emit_blocking(Event::SiteHeld {
            site: site.to_owned(),
            stage: stage.name.clone(),
            reason: reason.to_owned(),
            on_failure: policy,
            systems,
        })
    }

    /// Stops what the rollbacks of the stage's held sites (or of `only`)
    /// stop, dependents first; each system once, a stop a crash cut short
    /// settled as any rollback's is. Pause and abort leave a site as it is.
    pub(super) async fn stop_held_sites(
        &self,
        stage: &PlannedStage,
        only: Option<&str>,
    ) -> Result<(), EngineError> {
        let held: Vec<Vec<String>> = self
            .inner
            .lock()
            .held
            .iter()
            .filter(|h| h.stage == stage.name && only.is_none_or(|s| s == h.site))
            .map(|h| h.systems.clone())
            .collect();
        for systems in held {
            self.inner.stop_systems(&systems).await?;
        }
        Ok(())
    }
}

impl<S: RunStore + 'static> Inner<S> {
    /// The context a system's steps run in at its site: over ssh when the
    /// site is reached that way.
    pub(super) fn site_cx(&self, site: &str) -> StepContext {
        let own_cluster = self
            .plan
            .connections
            .get(site)
            .is_some_and(|c| c.kubernetes.is_some());
        StepContext {
            remote: self.ssh.get(site),
            // A site with a cluster of its own never falls back to the default one.
            cluster: if own_cluster {
                self.cx.site_clusters.get(site).cloned()
            } else {
                self.cx.cluster.clone()
            },
            ..self.cx.clone()
        }
    }

    /// A system not started because its site is held in its stage.
    pub(super) fn blocked_by_its_site(&self, id: &str, site: &str) -> Result<(), EngineError> {
        self.emit_blocking(system(
            id,
            SystemPhase::Blocked,
            Some(format!("its site {site} is held in this stage")),
        ))
    }
}
