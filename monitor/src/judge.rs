//! Scores and states: what a closed window's numbers mean against the
//! reference and the thresholds.
use crate::profile::{FeatureProfile, Reference};
use crate::settings::{Method, Settings};
use crate::stats;
use crate::window::FeatureWindow;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok = 0,
    Warning = 1,
    Drift = 2,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Warning => "warning",
            State::Drift => "drift",
        }
    }
}

/// A feature's scores, by the names the API and the metrics use.
pub type Scores = Vec<(&'static str, f64)>;

pub struct Verdict {
    pub scores: Scores,
    pub state: State,
}

/// Judges one feature's window. `tests` is how many p-value tests the
/// version runs per window (the Bonferroni divisor).
pub fn judge(feature: &FeatureProfile, window: &FeatureWindow, settings: &Settings, tests: usize) -> Verdict {
    let t = &settings.thresholds;
    let divisor = if settings.bonferroni { tests.max(1) as f64 } else { 1.0 };
    let mut scores = Scores::new();
    let mut verdicts: Vec<(Method, State)> = Vec::new();
    let drift_if = |yes: bool| if yes { State::Drift } else { State::Ok };
    match &feature.reference {
        Reference::Numeric(r) => {
            let psi = stats::psi(&r.counts, &window.counts);
            let js = stats::jensen_shannon(&r.counts, &window.counts);
            let mut sample = window.sample.clone();
            sample.sort_by(f64::total_cmp);
            let d = stats::ks_statistic(&r.sorted, &sample);
            let p = stats::ks_pvalue(d, r.sorted.len(), sample.len());
            let scale = if r.std > 0.0 { r.std } else { 1.0 };
            let w = stats::wasserstein(&r.sorted, &sample) / scale;
            scores.extend([
                ("psi", psi),
                ("ks_statistic", d),
                ("ks_pvalue", p),
                ("jensen_shannon", js),
                ("wasserstein", w),
            ]);
            verdicts.extend([
                (Method::Psi, psi_state(psi, t.psi)),
                (Method::Ks, drift_if(p < t.ks / divisor)),
                (Method::JensenShannon, drift_if(js >= t.jensen_shannon)),
                (Method::Wasserstein, drift_if(w >= t.wasserstein)),
            ]);
        }
        Reference::Categorical(r) => {
            // The reference never has the last (unseen) column.
            let mut reference = r.counts.clone();
            reference.push(0);
            let psi = stats::psi(&reference, &window.counts);
            let js = stats::jensen_shannon(&reference, &window.counts);
            let (chi2, p) = stats::chi2_homogeneity(&reference, &window.counts);
            let unseen = *window.counts.last().unwrap_or(&0) as f64 / window.n.max(1) as f64;
            scores.extend([
                ("psi", psi),
                ("chi2_statistic", chi2),
                ("chi2_pvalue", p),
                ("jensen_shannon", js),
                ("unseen_rate", unseen),
            ]);
            verdicts.extend([
                (Method::Psi, psi_state(psi, t.psi)),
                (Method::Chi2, drift_if(p < t.chi2 / divisor)),
                (Method::JensenShannon, drift_if(js >= t.jensen_shannon)),
            ]);
        }
    }
    let decide = settings.decide(feature.reference.kind());
    let says = |m: &Method| verdicts.iter().find(|(v, _)| v == m).map_or(State::Ok, |(_, s)| *s);
    // One deciding method: its own verdict (PSI has two levels). Several:
    // drift when every one flags the feature, warning when most do.
    let flagging = decide.iter().filter(|m| says(m) != State::Ok).count();
    let state = match decide {
        [one] => says(one),
        _ if flagging == decide.len() => State::Drift,
        _ if flagging * 2 > decide.len() => State::Warning,
        _ => State::Ok,
    };
    Verdict { scores, state }
}

fn psi_state(psi: f64, (warning, drift): (f64, f64)) -> State {
    if psi >= drift {
        State::Drift
    } else if psi >= warning {
        State::Warning
    } else {
        State::Ok
    }
}
