//! Unix signals of the daemon: SIGTERM and SIGINT ask for a clean stop, SIGHUP for a config
//! reload. It only turns signals into futures and channel messages; it must not act on them.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Resolves on the first SIGTERM or SIGINT. Registration failure is returned at once (the
/// daemon then refuses to start rather than being unstoppable).
pub fn terminate() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "stop requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "stop requested"),
        }
    })
}

/// Sends `()` on the returned channel for every SIGHUP.
pub fn reloads() -> std::io::Result<mpsc::Receiver<()>> {
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(signal = "SIGHUP", "reload requested");
            // A reload already queued covers this one.
            let _ = tx.try_send(());
            if tx.is_closed() {
                break;
            }
        }
    });
    Ok(rx)
}
