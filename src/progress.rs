//! The progress bars the binary draws on a terminal; the libraries only report how far they got.

use std::sync::Arc;

use cis_ingest::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Files smaller than this (a few thousand rows) are read too fast for a bar to be worth drawing.
const INGEST_BAR_MIN_BYTES: u64 = 256 * 1024;

/// An ingest's bar over the bytes of its input, drawn on stderr.
struct IngestBar(ProgressBar);

impl Progress for IngestBar {
    fn start(&self, total_bytes: u64) {
        if total_bytes > INGEST_BAR_MIN_BYTES {
            self.0.set_length(total_bytes);
            // indicatif itself hides a bar whose stderr is not a terminal.
            self.0.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// The progress sink of an ingest: a bar when `draw` (stderr is a terminal), else none.
pub(crate) fn ingest_bar(draw: bool) -> Option<Arc<dyn Progress>> {
    if !draw {
        return None;
    }
    // Hidden until `start` learns the input is big enough.
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} {wide_bar} {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(Arc::new(IngestBar(bar)))
}
