//! The logs' filter (`RUST_LOG`, default `info`) without the span bookkeeping it does not
//! need, and the pretty formatter's hand-off of the access lines.
//!
//! An [`EnvFilter`] keeps a table of live spans for directives scoped to spans or field values
//! (`[request]=debug`, `[{user_id=x}]=trace`), and reads it under a lock on every span's
//! creation, enter, exit and close, whether or not such a directive exists. Pretty logs build a
//! request's spans (their names and fields are printed), and measured with callgrind that
//! bookkeeping, with the per-layer filtering around it, was ~12k of the ~26k instructions the
//! subscriber took per request at the defaults. [`LogFilter`] asks the same [`EnvFilter`]
//! everything, and forwards the span calls only when `RUST_LOG` has a scoped directive.

use tracing::{
    span,
    subscriber::{Interest, Subscriber},
    Event, Metadata,
};
use tracing_subscriber::{
    filter::LevelFilter,
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    layer::{Context, Filter},
    registry::LookupSpan,
    EnvFilter, Layer,
};

/// `RUST_LOG` (default `info`) as an [`EnvFilter`] reads it, usable as a per-layer filter or
/// as a layer of its own (a global filter). Without a scoped directive (no `[` in the text)
/// the filter's table of spans stays empty, so the span calls that would only look it up under
/// its lock are not made; with one, every call is forwarded.
#[derive(Debug)]
pub(crate) struct LogFilter {
    env: EnvFilter,
    scoped: bool,
}

impl LogFilter {
    /// The filter `RUST_LOG` asks for; `info` when it is unset or does not parse.
    pub(crate) fn from_env() -> Self {
        Self::from_spec(std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref())
    }

    /// The filter for `spec` as `RUST_LOG`'s text; `info` when `None` or it does not parse.
    pub(crate) fn from_spec(spec: Option<&str>) -> Self {
        match spec.map(|s| (EnvFilter::builder().parse(s), s)) {
            Some((Ok(env), s)) => Self {
                env,
                // Span names and field values are written inside brackets, and nowhere else.
                scoped: s.contains('['),
            },
            _ => Self {
                env: EnvFilter::new("info"),
                scoped: false,
            },
        }
    }

    /// Whether `RUST_LOG` has a directive scoped to spans or field values: which events it
    /// lets through then depends on more than their target and level.
    pub(crate) fn is_scoped(&self) -> bool {
        self.scoped
    }
}

/// The span calls, forwarded to the [`EnvFilter`] (as a `Filter` or as a `Layer`) only when
/// `RUST_LOG` has a scoped directive: the same gate for both traits.
macro_rules! scoped_span_calls {
    ($trait:ident) => {
        fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
            if self.scoped {
                $trait::on_new_span(&self.env, attrs, id, cx);
            }
        }

        fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
            if self.scoped {
                $trait::on_record(&self.env, id, values, cx);
            }
        }

        fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
            if self.scoped {
                $trait::on_enter(&self.env, id, cx);
            }
        }

        fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
            if self.scoped {
                $trait::on_exit(&self.env, id, cx);
            }
        }

        fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
            if self.scoped {
                $trait::on_close(&self.env, id, cx);
            }
        }
    };
}

impl<S: Subscriber> Filter<S> for LogFilter {
    #[inline]
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        Filter::<S>::enabled(&self.env, meta, cx)
    }

    #[inline]
    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        Filter::<S>::callsite_enabled(&self.env, meta)
    }

    #[inline]
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&self.env)
    }

    scoped_span_calls!(Filter);
}

impl<S: Subscriber> Layer<S> for LogFilter {
    #[inline]
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        Layer::<S>::register_callsite(&self.env, meta)
    }

    #[inline]
    fn enabled(&self, meta: &Metadata<'_>, cx: Context<'_, S>) -> bool {
        Layer::<S>::enabled(&self.env, meta, cx)
    }

    #[inline]
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.env)
    }

    scoped_span_calls!(Layer);
}

/// An event format that leaves the access lines out (another layer writes them): the pretty
/// formatter, unfiltered under a global [`LogFilter`], sees every event.
#[derive(Debug)]
pub(crate) struct SkipAccess<E>(pub(crate) E);

impl<S, N, E> FormatEvent<S, N> for SkipAccess<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        cx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if event.metadata().target() == super::json_log::ACCESS_TARGET {
            return Ok(());
        }
        self.0.format_event(cx, writer, event)
    }
}
