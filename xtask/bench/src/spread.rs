//! The median and range of a figure over a bench's rounds: how the
//! benches that alternate contenders report each figure.

/// The median and range of a few rounds' figure.
pub struct Spread {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl Spread {
    pub fn of(values: impl Iterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.collect();
        v.sort_by(f64::total_cmp);
        Spread {
            median: v[v.len() / 2],
            low: v[0],
            high: v[v.len() - 1],
        }
    }

    pub fn show(&self) -> String {
        // Records/s read best whole, CPU seconds and MiB with decimals.
        let digits = if self.median >= 1000.0 { 0 } else { 2 };
        format!(
            "{:.digits$} ({:.digits$} - {:.digits$})",
            self.median, self.low, self.high
        )
    }
}
