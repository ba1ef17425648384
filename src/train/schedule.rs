//! Learning-rate schedules, as transformers' `get_*_schedule_with_warmup`:
//! the multiplier for optimizer step `step` (0-based) is `step / warmup`
//! during warm-up, then decays to 0 at `total` linearly or by a half cosine.

use std::f64::consts::PI;

/// Shape of the decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Constant after warm-up.
    Constant,
    /// Linear decay to zero.
    Linear,
    /// Half-cosine decay to zero.
    Cosine,
}

impl Schedule {
    /// Parses `constant`, `linear` or `cosine`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "constant" => Some(Self::Constant),
            "linear" => Some(Self::Linear),
            "cosine" => Some(Self::Cosine),
            _ => None,
        }
    }

    /// Its name, as [`Schedule::parse`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Linear => "linear",
            Self::Cosine => "cosine",
        }
    }

    /// The multiplier of the peak learning rate at `step`.
    pub fn factor(self, step: usize, warmup: usize, total: usize) -> f64 {
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
        match self {
            Self::Constant => 1.0,
            Self::Linear => (1.0 - progress).max(0.0),
            Self::Cosine => (0.5 * (1.0 + (PI * progress).cos())).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn warm_up_rises_linearly_from_zero_as_transformers_does() {
        let f: Vec<f64> = (0..4).map(|s| Schedule::Cosine.factor(s, 4, 10)).collect();
        assert_eq!(f, vec![0.0, 0.25, 0.5, 0.75]);
    }

    #[test]
    fn cosine_is_half_way_at_the_middle_and_zero_at_the_end() {
        assert!((Schedule::Cosine.factor(7, 4, 10) - 0.5).abs() < 1e-12);
        assert!(Schedule::Cosine.factor(10, 4, 10).abs() < 1e-12);
        assert_eq!(Schedule::Cosine.factor(4, 4, 10), 1.0);
    }

    #[test]
    fn linear_decays_to_zero_and_constant_stays() {
        assert_eq!(Schedule::Linear.factor(6, 2, 10), 0.5);
        assert_eq!(Schedule::Linear.factor(12, 2, 10), 0.0);
        assert_eq!(Schedule::Constant.factor(9, 2, 10), 1.0);
    }
}
