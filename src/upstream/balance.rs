//! Deployments: several `[[models]]` entries with one name are one model served by several
//! upstreams, and requests are spread over the available ones by `weight` with smooth weighted
//! round robin.
//!
//! # Why smooth weighted round robin and not power-of-two-choices
//! Power-of-two-choices picks the less loaded of two random deployments: it shines when the
//! gateway can see load (in-flight counts, latency) and there are many replicas. Here the
//! deployments are mostly provider accounts and regions whose price, quota and rate limits are
//! what the weights express, so the split itself is the contract: `weight = 3` next to
//! `weight = 1` must mean 75 % / 25 %, over the next 4 requests as much as over a day. Smooth
//! weighted round robin (nginx's `ngx_http_upstream_get_peer`) is deterministic and
//! interleaves (A A B A, never A A A B), so short windows match the weights too and tests can
//! check the split exactly; random choices only converge on it. Health is handled by leaving
//! unavailable deployments out of the round, not by load sampling.

use std::sync::{Arc, Mutex};

use smallvec::{smallvec, SmallVec};

use super::router::ModelRoute;

/// Deployment indexes in the order to try them; inline up to four (no allocation per request
/// for the common one or few deployments).
pub type Order = SmallVec<[usize; 4]>;

/// One model's deployments with the round's running weights. Cloning shares the state.
#[derive(Debug, Clone)]
pub struct Deployments {
    routes: Arc<[ModelRoute]>,
    /// The first deployment's name, shared (every response's route record names it).
    name: Arc<str>,
    /// nginx's `current_weight` per deployment.
    current: Arc<Mutex<Vec<i64>>>,
}

impl Deployments {
    /// The deployments of one model name, in config order (at least one).
    pub fn new(routes: Vec<ModelRoute>) -> Self {
        let n = routes.len();
        Self {
            name: routes.first().map_or("", |r| r.name.as_str()).into(),
            routes: routes.into(),
            current: Arc::new(Mutex::new(vec![0; n])),
        }
    }

    /// The first deployment: it names the model and holds the shared settings (fallbacks).
    pub fn first(&self) -> &ModelRoute {
        &self.routes[0]
    }

    /// The model's configured name (the first deployment's).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Every deployment, in config order.
    pub fn routes(&self) -> &[ModelRoute] {
        &self.routes
    }

    /// The order to try the deployments in for one request: the smooth-weighted pick among
    /// those `available` says are up, then the other available ones by weight (heaviest
    /// first, ties in config order) so a failed attempt moves on to another deployment.
    ///
    /// `available` is asked once per deployment. With `include_unavailable`, the deployments
    /// it rules out follow the available ones (in the same order) instead of being left out.
    pub fn order(
        &self,
        available: impl Fn(&ModelRoute) -> bool,
        include_unavailable: bool,
    ) -> Order {
        // One deployment (most models): no weights to keep, nothing to order.
        if let [only] = &*self.routes {
            return if include_unavailable || available(only) {
                smallvec![0]
            } else {
                Order::new()
            };
        }
        let up: Vec<bool> = self.routes.iter().map(&available).collect();
        let mut order = Order::with_capacity(self.routes.len());
        let candidates: Vec<usize> = (0..self.routes.len()).filter(|&i| up[i]).collect();
        let pool = if candidates.is_empty() && include_unavailable {
            (0..self.routes.len()).collect()
        } else {
            candidates
        };
        if let Some(pick) = self.pick(&pool) {
            order.push(pick);
            let mut rest: Vec<usize> = pool.into_iter().filter(|&i| i != pick).collect();
            rest.sort_by_key(|&i| std::cmp::Reverse(self.routes[i].weight));
            order.extend(rest);
        }
        if include_unavailable {
            let mut down: Vec<usize> = (0..self.routes.len())
                .filter(|i| !order.contains(i))
                .collect();
            down.sort_by_key(|&i| std::cmp::Reverse(self.routes[i].weight));
            order.extend(down);
        }
        order
    }

    /// nginx's smooth weighted round robin over `pool`: every member's current weight grows
    /// by its weight, the largest is picked and pays back the round's total. Deployments
    /// outside the pool keep their current weight, so one that comes back resumes its share.
    fn pick(&self, pool: &[usize]) -> Option<usize> {
        if pool.len() <= 1 {
            return pool.first().copied();
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for &i in pool {
            let w = i64::from(self.routes[i].weight.max(1));
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(upstream: &str, weight: u32) -> ModelRoute {
        ModelRoute {
            name: "m".into(),
            upstream: upstream.into(),
            model: None,
            fallbacks: vec![],
            weight,
            params: None,
            headers: Arc::from(Vec::new()),
        }
    }

    fn picks(d: &Deployments, n: usize, available: impl Fn(&ModelRoute) -> bool + Copy) -> String {
        (0..n)
            .map(|_| d.routes()[d.order(available, false)[0]].upstream.clone())
            .collect()
    }

    #[test]
    fn smooth_interleaving_as_nginx() {
        // nginx's own example: weights 5, 1, 1 give a a b a c a a.
        let d = Deployments::new(vec![route("a", 5), route("b", 1), route("c", 1)]);
        assert_eq!(picks(&d, 7, |_| true), "aabacaa");
        // 3:1 never sends three in a row to the heavier one within a round.
        let d = Deployments::new(vec![route("a", 3), route("b", 1)]);
        assert_eq!(picks(&d, 8, |_| true), "aabaaaba");
    }

    #[test]
    fn unavailable_deployments_are_left_out_or_tried_last() {
        let d = Deployments::new(vec![route("a", 1), route("b", 1), route("c", 2)]);
        assert_eq!(picks(&d, 4, |r| r.upstream != "c"), "abab");
        let order = d.order(|r| r.upstream == "a", false);
        assert_eq!(order.as_slice(), [0]);
        let order = d.order(|r| r.upstream == "a", true);
        assert_eq!(
            order.as_slice(),
            [0, 2, 1],
            "the rest follow, heaviest first"
        );
        let order = d.order(|_| false, false);
        assert!(order.is_empty());
        let order = d.order(|_| false, true);
        assert_eq!(order.len(), 3, "all out: all are still tried");
    }

    #[test]
    fn one_deployment_is_tried_when_up_or_when_all_are_out() {
        let d = Deployments::new(vec![route("a", 1)]);
        assert_eq!(d.order(|_| true, false).as_slice(), [0]);
        assert!(d.order(|_| false, false).is_empty(), "down and not forced");
        assert_eq!(
            d.order(|_| false, true).as_slice(),
            [0],
            "all out: still tried"
        );
        assert_eq!(d.order(|_| true, true).as_slice(), [0]);
    }

    #[test]
    fn failover_order_follows_the_pick() {
        let d = Deployments::new(vec![route("a", 1), route("b", 3)]);
        let order = d.order(|_| true, false);
        assert_eq!(order.as_slice(), [1, 0]);
        let order = d.order(|_| true, false);
        assert_eq!(order.as_slice(), [0, 1]);
    }
}
