//! `glasshouse sql`: a query through a query service's Flight SQL front door,
//! printed as a table, CSV or JSON Lines (container strings escaped, see
//! `glasshouse_lake::output`), with a progress line on standard error while
//! a query runs longer than a second (only when standard error is a terminal).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use glasshouse_lake::output::{Style, render};

/// Why `glasshouse sql` printed no result.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Query(#[from] glasshouse_lake::flight::ClientError),
    #[error("rendering the result")]
    Render(#[from] arrow_schema::ArrowError),
}

/// Runs `sql` against `endpoint` with `token`; the rendered result.
pub async fn query(endpoint: &str, token: &str, sql: &str, style: Style) -> Result<String, SqlError> {
    let rows = Arc::new(AtomicUsize::new(0));
    let progress = std::io::stderr().is_terminal().then(|| {
        let rows = rows.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let spinner = ['|', '/', '-', '\\'];
            for i in 0.. {
                {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r{} running {:.1} s, {} rows received ",
                        spinner[i % 4],
                        started.elapsed().as_secs_f64(),
                        rows.load(Ordering::Relaxed)
                    );
                    let _ = err.flush();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let result =
        glasshouse_lake::flight::client_query(endpoint, token, sql, |n| rows.store(n, Ordering::Relaxed)).await;
    if let Some(p) = progress {
        p.abort();
        // Clear the progress line (if one was drawn).
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
    let (schema, batches) = result?;
    Ok(render(&schema, &batches, style, crate::escape::terminal)?)
}
