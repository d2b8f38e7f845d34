//! A TCP check: healthy when a connection is accepted within the timeout.

use blackstart_model::playbook::Tcp;

use super::{Outcome, Step, StepContext};

impl Step for Tcp {
    async fn run(&self, cx: &StepContext) -> Outcome {
        let address = match cx.secrets.resolve(&self.address) {
            Ok(a) => a,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        let shown = cx.secrets.redact(&address);
        let connect = async {
            let addrs = tokio::net::lookup_host(address.as_str())
                .await
                .map_err(|e| format!("cannot resolve `{shown}`: {e}"))?;
            let mut last = format!("`{shown}` resolves to no address");
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(_) => return Ok(format!("connected to {shown} ({addr})")),
                    Err(e) => last = format!("cannot connect to {shown} ({addr}): {e}"),
                }
            }
            Err(last)
        };
        match tokio::time::timeout(cx.timeout, connect).await {
            Ok(Ok(detail)) => Outcome::ok(detail),
            Ok(Err(detail)) => Outcome::failed(cx.secrets.redact(&detail)),
            Err(_) => Outcome::failed(format!(
                "no connection to {shown} within {}",
                humantime::format_duration(cx.timeout)
            )),
        }
    }
}
