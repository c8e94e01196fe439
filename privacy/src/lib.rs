//! Hushmap's privacy accounting, in one place for every part that spends or
//! reports privacy loss: the streaming aggregator (single and partitioned),
//! batch mode, and the dashboard's privacy panel.
//!
//! * [`conversion`]: OpenDP's zCDP → (ε, δ) conversion and its inverse.
//! * [`cost`]: [`ReleaseCost`], what one release costs each contributor,
//!   statistic by statistic.
//! * [`composition`]: what a contributor loses over several releases
//!   (ρ adds, pure ε adds, δ adds; the zCDP part is converted once).
//! * [`ledger`]: the [`PrivacyLedger`] that authorises every release against
//!   the budget; its [`Authorisation`] is the only way to get a release
//!   noised.
//! * [`ledger_file`]: a ledger persisted as a file (batch mode).
//! * [`sensitivity`]: the contribution bounds and the sensitivities that
//!   follow from them.
//! * [`noise`]: the one noise function, OpenDP's exact samplers calibrated
//!   to those sensitivities, and the noisy threshold that decides which
//!   regions are released.
//! * [`release`]: the [`ReleasePlan`](release::ReleasePlan) calibrated from
//!   the budget split, and [`release_window`](release::release_window), the
//!   one step from a window's bounded counts to its release (authorise,
//!   then noise, then post-process) that every topology and batch mode
//!   take.
//!
//! ```
//! use hushmap_privacy::{Budget, BudgetLimit, PrivacyLedger, ReleaseCost};
//! use hushmap_schema::{Window, WindowLength};
//!
//! let mut ledger = PrivacyLedger::new(Budget {
//!     limits: vec![BudgetLimit { horizon_ms: 86_400_000, max_epsilon: 1.0 }],
//!     delta: 1e-8,
//!     max_delta: 1e-6,
//! });
//! let day = |d: i64| Window::from_start(d * 86_400_000, WindowLength::ONE_DAY).unwrap();
//! let cost = ReleaseCost::pure(0.75, 0.0, Vec::new());
//! let first = ledger.authorise(day(0), cost.clone()).unwrap();
//! assert_eq!(first.window(), day(0));
//! // The same window again: refused, whatever the budget says.
//! assert!(ledger.authorise(day(0), cost.clone()).is_err());
//! // The next day has a budget of its own.
//! assert!(ledger.authorise(day(1), cost).is_ok());
//! ```

pub mod composition;
pub mod conversion;
pub mod cost;
pub mod ledger;
pub mod ledger_file;
pub mod noise;
pub mod release;
pub mod sensitivity;

pub use composition::Composition;
pub use conversion::{ConversionError, zcdp_epsilon, zcdp_epsilon_or_bound, zcdp_rho_for};
pub use cost::ReleaseCost;
pub use ledger::{Authorisation, Budget, BudgetLimit, LedgerEntry, LedgerError, PrivacyLedger};
pub use ledger_file::{LedgerFile, LedgerFileError};
