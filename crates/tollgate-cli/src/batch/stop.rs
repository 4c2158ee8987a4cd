//! Stopping on SIGINT (Ctrl-C) and SIGTERM (docker, systemd, Kubernetes): the first signal
//! stops admitting and lets the requests in flight finish within the grace period, a second one
//! stops at once; either way what completed is written and the summary is printed.

use tokio::sync::watch;

/// Which signal stopped the run, and how many came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Stop {
    pub(crate) signal: Option<Signal>,
    pub(crate) count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// The conventional exit code: 128 plus the signal's number.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "interrupted",
            Signal::Terminate => "terminated",
        }
    }
}

/// Listens for both signals; the receiver sees every one.
pub(crate) fn listen(grace_secs: f64) -> Result<watch::Receiver<Stop>, String> {
    let (sender, receiver) = watch::channel(Stop::default());
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    tokio::spawn(async move {
        loop {
            #[cfg(unix)]
            let signal = tokio::select! {
                result = tokio::signal::ctrl_c() => match result {
                    Ok(()) => Signal::Interrupt,
                    Err(_) => return,
                },
                _ = terminate.recv() => Signal::Terminate,
            };
            #[cfg(not(unix))]
            let signal = match tokio::signal::ctrl_c().await {
                Ok(()) => Signal::Interrupt,
                Err(_) => return,
            };
            let mut stop = Stop::default();
            sender.send_modify(|now| {
                now.signal.get_or_insert(signal);
                now.count += 1;
                stop = *now;
            });
            if stop.count == 1 {
                eprintln!(
                    "\ntollgate: {}: admitting no more; the requests in flight have {grace_secs}s \
                     to finish (a second signal stops at once)",
                    signal.name()
                );
            } else {
                eprintln!("\ntollgate: stopping now");
            }
        }
    });
    Ok(receiver)
}
