use std::fmt;

use tch::Tensor;

use crate::check;
use crate::error::{Error, Result};

/// One named, weighted term of a training objective, detached for logging.
#[derive(Debug, Clone, PartialEq)]
pub struct TermValue {
    /// The term's name (`"energy"`, `"score"`, ...).
    pub name: String,
    /// Its weight in the total.
    pub weight: f64,
    /// Its unweighted value.
    pub value: f64,
}

/// A weighted sum of named loss terms with a per-term breakdown.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use physcon::losses::LossTerms;
/// use tch::Tensor;
/// let mut terms = LossTerms::new();
/// terms.push("energy", 1.0, Tensor::from(2.0f64))?;
/// terms.push("denoising", 0.01, Tensor::from(10.0f64))?;
/// assert!((terms.total()?.double_value(&[]) - 2.1).abs() < 1e-12);
/// assert_eq!(terms.breakdown()[1].name, "denoising");
/// println!("{terms}"); // energy 2.0000 (x1) | denoising 10.0000 (x0.01)
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct LossTerms {
    terms: Vec<(String, f64, Tensor)>,
}

impl LossTerms {
    /// An empty objective.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `weight * loss` under `name`. A zero weight records the value but adds no graph.
    ///
    /// # Errors
    /// [`Error::NonPositive`]-style [`Error::InvalidArgument`] for a negative or
    /// non-finite weight; [`Error::Shape`] unless `loss` is a scalar; a repeated name.
    pub fn push(&mut self, name: &str, weight: f64, loss: Tensor) -> Result<&mut Self> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(Error::InvalidArgument {
                arg: "weight",
                reason: format!("term `{name}`: must be finite and >= 0, got {weight}"),
            });
        }
        if loss.dim() != 0 {
            return Err(Error::Shape {
                arg: "loss",
                expected: "a scalar []".into(),
                got: loss.size(),
            });
        }
        check::float("loss", &loss)?;
        if self.terms.iter().any(|(n, _, _)| n == name) {
            return Err(Error::InvalidArgument {
                arg: "name",
                reason: format!("term `{name}` added twice"),
            });
        }
        self.terms.push((name.to_owned(), weight, loss));
        Ok(self)
    }

    /// `sum_k w_k L_k` over terms with a non-zero weight (keeps the graph).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when no term has a non-zero weight, or the
    /// terms live on different devices or dtypes.
    pub fn total(&self) -> Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for (_, weight, loss) in self.terms.iter().filter(|(_, w, _)| *w > 0.0) {
            let weighted = loss.f_mul_scalar(*weight)?;
            total = Some(match total {
                None => weighted,
                Some(t) => t.f_add(&weighted)?,
            });
        }
        total.ok_or_else(|| Error::InvalidArgument {
            arg: "terms",
            reason: "no term has a non-zero weight".into(),
        })
    }

    /// The unweighted value of every term, in insertion order.
    pub fn breakdown(&self) -> Vec<TermValue> {
        self.terms
            .iter()
            .map(|(name, weight, loss)| TermValue {
                name: name.clone(),
                weight: *weight,
                value: loss.f_double_value(&[]).unwrap_or(f64::NAN),
            })
            .collect()
    }
}

impl fmt::Display for LossTerms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, term) in self.breakdown().iter().enumerate() {
            if k > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{} {:.4} (x{})", term.name, term.value, term.weight)?;
        }
        Ok(())
    }
}
