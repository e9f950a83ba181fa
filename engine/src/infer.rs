//! The one request path: route, run on the version, observe.
//!
//! Every request comes through here, whichever front end decoded it: REST
//! (JSON and binary), gRPC, gRPC streams. A front end either calls
//! [`Engine::infer`] (route and run), or, when it needs the version's spec
//! to decode the request (the raw binary form), [`Engine::route`] and then
//! [`Route::run`]. Shadow copies and the validation gate run on a version
//! directly ([`ModelVersion::run`]).
//!
//! After the answer is ready, [`Route::run`] is the one place where
//! observers see the request and its outcome: the variant's traffic
//! statistics, its shadow copy, and the taps (`tap.rs`).
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::cache::{Key, ResponseCache};
use super::error::Result;
use super::model::{ModelVersion, Priority};
use super::request::{InferRequest, InferResponse};
use super::tap::{Context, Exchange, Kind, Taps, Timing};
use super::traffic::{Traffic, VARIANT_HEADER};
use crate::engine::Engine;

/// Where a request goes: the version, the variant that chose it, the shadow
/// it is also sent to, the server-wide taps that watch it, and the response
/// cache when the server has one.
pub struct Route<'e> {
    pub model: Arc<ModelVersion>,
    variant: Option<(Arc<Traffic>, usize)>,
    shadow: Option<(Arc<ModelVersion>, OwnedSemaphorePermit)>,
    /// Borrowed from the engine: no reference count touched per request.
    taps: &'e Taps,
    cache: Option<&'e dyn ResponseCache>,
}

impl Engine {
    /// Routes and runs one request.
    pub async fn infer(&self, req: InferRequest, context: &Context<'_>) -> Result<InferResponse> {
        let route = self.route(&req.model_name, req.model_version.as_deref(), context)?;
        route.run(req, context).await
    }

    /// The version a request runs on. A version in the URL (a number or a
    /// label) is served as asked; otherwise the model's policy, if it has
    /// one, picks a variant by the request's headers.
    pub fn route(&self, name: &str, version: Option<&str>, context: &Context<'_>) -> Result<Route<'_>> {
        let cache = self.cache.as_deref();
        let plain = |model| Route {
            model,
            variant: None,
            shadow: None,
            taps: &self.taps,
            cache,
        };
        if version.is_some_and(|v| !v.is_empty()) {
            return Ok(plain(self.resolve(name, version)?));
        }
        let policies = self.traffic.load();
        let Some(t) = policies.get(name) else {
            return Ok(plain(self.resolve(name, None)?));
        };
        let headers = context.headers();
        let forced = headers.get(VARIANT_HEADER).is_some();
        let mut i = t.pick(headers)?;
        let model = match self.variant_target(name, t, i) {
            Ok(m) => m,
            // A chosen (not forced) variant that cannot serve: the default does.
            Err(_) if !forced && i != t.default => {
                t.stats[i].refused();
                i = t.default;
                self.variant_target(name, t, i).inspect_err(|_| t.stats[i].refused())?
            }
            Err(e) => {
                t.stats[i].refused();
                return Err(e);
            }
        };
        // Shadowed: a share of the requests the shadow variant is not
        // serving, when its version has room.
        let shadow = t.shadow.as_ref().filter(|s| s.index != i && s.wanted()).and_then(|s| {
            let target = self.variant_target(name, t, s.index).ok()?;
            let permit = s.reserve(&target)?;
            Some((target, permit))
        });
        Ok(Route {
            model,
            variant: Some((Arc::clone(t), i)),
            shadow,
            taps: &self.taps,
            cache,
        })
    }
}

impl Route<'_> {
    /// The traffic variant that chose the version, when a policy did.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_ref().map(|(t, i)| t.variant_name(*i))
    }

    /// Runs the request on the routed version, then lets the observers see
    /// it. Nothing here waits for an observer: the shadow copy runs as a
    /// task of its own, sharing the tensor bytes; taps return at once.
    pub async fn run(self, req: InferRequest, context: &Context<'_>) -> Result<InferResponse> {
        let Route {
            model,
            variant,
            shadow,
            taps,
            cache,
        } = self;
        // The cache, when the model asks for it and every step of an
        // ensemble can run (else its identity is unknown: no caching).
        let cache = cache
            .filter(|_| model.caches())
            .and_then(|c| Some((c, model.identity()?)));
        let observed = !taps.is_empty() || !model.taps.is_empty();
        let keep = shadow.is_some() || (observed && (taps.wants_request() || model.taps.wants_request()));
        // Shared by the taps (one clone of names and shapes, whoever keeps it).
        let kept = keep.then(|| Arc::new(req.kept_copy()));
        if observed {
            let view = model.view();
            taps.begin(&view, context);
            model.taps.begin(&view, context);
        }
        let run = async {
            match cache {
                None => model.infer(req).await,
                Some((cache, identity)) => cached(cache, identity, &model, req).await,
            }
        };
        let (result, timing) = match context.trace() {
            None => run.await,
            // A traced request's log lines name its trace and span. The
            // request path logs at debug only: below that the span is off
            // and costs one level check.
            Some(ids) => {
                let span = tracing::debug_span!("request", trace_id = %ids.trace_hex(), span_id = %ids.span_hex());
                run.instrument(span).await
            }
        };
        if let Some((t, i)) = &variant {
            t.record(*i, result.is_ok(), timing.elapsed);
        }
        if observed {
            let exchange = Exchange {
                kind: Kind::Client,
                model: model.view(),
                variant: variant.as_ref().map(|(t, i)| t.variant_name(*i)),
                context,
                request: kept.as_ref(),
                result: &result,
                timing,
            };
            taps.observe(&exchange);
            model.taps.observe(&exchange);
        }
        if let (Ok(resp), Some((target, permit)), Some(copy), Some((t, _))) = (&result, shadow, kept, &variant) {
            send_shadow(copy, resp, target, permit, Arc::clone(t), taps.clone());
        }
        result
    }
}

/// Runs a request through the response cache: a hit is answered from it
/// (and counted as the version's success, as Triton counts it); a miss runs
/// on the version and stores a successful answer. Each lookup counts once,
/// as a hit or a miss, with the cache's part of the time.
async fn cached(
    cache: &dyn ResponseCache,
    identity: u64,
    model: &ModelVersion,
    req: InferRequest,
) -> (Result<InferResponse>, Timing) {
    let started = Instant::now();
    let hash = {
        let key = Key::new(model, identity, &req);
        if let Some(outputs) = cache.get(&key).await {
            let mut timing = Timing::start();
            timing.started = started;
            timing.elapsed = started.elapsed();
            model.stats.cache_lookup(true, timing.elapsed);
            model.stats.request(Ok(()), timing.elapsed);
            let answer = InferResponse {
                model_name: model.name().to_owned(),
                model_version: model.version.to_string(),
                id: req.id,
                outputs,
            };
            return (Ok(answer), timing);
        }
        key.hash
    };
    let lookup = started.elapsed();
    // The run takes the request; the store needs its key after: a copy
    // whose tensors share the request's bytes.
    let copy = req.clone();
    let (result, timing) = model.infer(req).await;
    let store = Instant::now();
    if let Ok(answer) = &result {
        cache
            .put(&Key::with_hash(model, identity, &copy, hash), &answer.outputs)
            .await;
    }
    model.stats.cache_lookup(false, lookup + store.elapsed());
    (result, timing)
}

/// Sends the shadow copy of an answered request to the shadow variant's
/// version, as a task of its own at background priority: observers see its
/// run as a [`Kind::Shadow`] exchange, and the traffic policy compares its
/// outputs with the answer the client got.
fn send_shadow(
    copy: Arc<InferRequest>,
    answered: &InferResponse,
    target: Arc<ModelVersion>,
    permit: OwnedSemaphorePermit,
    traffic: Arc<Traffic>,
    taps: Taps,
) {
    let primary = answered.outputs.clone();
    tokio::spawn(async move {
        let _slot = permit;
        let observed = !taps.is_empty() || !target.taps.is_empty();
        let request = observed.then(|| Arc::clone(&copy));
        // A tap may still hold the client's copy: then this clones it.
        let mut run = Arc::unwrap_or_clone(copy);
        run.model_version = None;
        let context = Context::internal();
        if observed {
            let view = target.view();
            taps.begin(&view, &context);
            target.taps.begin(&view, &context);
        }
        let (out, timing) = target.run(run, Priority::Background).await;
        if observed {
            let exchange = Exchange {
                kind: Kind::Shadow,
                model: target.view(),
                variant: traffic.shadow.as_ref().map(|s| traffic.variant_name(s.index)),
                context: &context,
                request: request.as_ref(),
                result: &out,
                timing,
            };
            taps.observe(&exchange);
            target.taps.observe(&exchange);
        }
        if let Some(s) = &traffic.shadow {
            s.compare(&primary, out.map(|r| r.outputs).map_err(|e| e.message));
        }
    });
}
