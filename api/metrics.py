"""Prometheus metrics, read from the agent's state at scrape time (so they are right across processes and
workers), in a registry owned by one app (no global registry)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, SummaryMetricFamily


class AgentCollector:
    def __init__(self, agent):
        self.agent = agent

    def collect(self):
        a = self.agent
        jobs = GaugeMetricFamily("seal_jobs", "Jobs by state", labels=["state"])
        for state, n in a.jobs.counts().items():
            jobs.add_metric([state], n)
        yield jobs
        depth = a.transport.depth()
        yield GaugeMetricFamily("seal_queue_depth", "Jobs waiting in the transport queue",
                                value=float("nan") if depth is None else depth)
        stages = SummaryMetricFamily("seal_job_stage_seconds", "Seconds per pipeline stage of finished jobs",
                                     labels=["stage"])
        for stage, xs in sorted(a.jobs.stage_seconds().items()):
            stages.add_metric([stage], count_value=len(xs), sum_value=sum(xs))
        yield stages
        st = a.server.stats
        yield CounterMetricFamily("seal_generated_tokens", "Tokens generated for queries", value=st.tokens)
        yield CounterMetricFamily("seal_generation_seconds", "Seconds spent generating for queries",
                                  value=st.seconds)
        yield CounterMetricFamily("seal_routing_unavailable", "Requests answered by the base weights because their "
                                  "version's routing could not be built", value=st.routing_unavailable)
        yield GaugeMetricFamily("seal_generation_tokens_per_second", "Mean generation speed since start",
                                value=st.tokens / st.seconds if st.seconds else 0.0)
        yield from batching_metrics(a.server)
        yield GaugeMetricFamily("seal_adapter_cache_bytes", "Bytes of routed adapters loaded for queries",
                                value=a.server.cache.bytes)
        yield GaugeMetricFamily("seal_adapter_cache_adapters", "Routed adapters loaded for queries",
                                value=len(a.server.cache))
        aliases = a.stack.aliases()
        yield GaugeMetricFamily("seal_prod_version", "The version behind the prod alias (0 = none)",
                                value=aliases.get("prod", 0))
        yield GaugeMetricFamily("seal_versions", "Student versions in the stack", value=len(a.stack.versions()))
        general = a.memory.general()
        canary = GaugeMetricFamily("seal_canary_accuracy", "General-capability canary accuracy",
                                   labels=["version"])
        drift = GaugeMetricFamily("seal_drift_kl", "KL(base || version) on neutral prompts, nats per token",
                                  labels=["version"])
        for label, v in (("base", 0), ("prod", aliases.get("prod")), ("latest", aliases.get("latest"))):
            if v is not None and v in general:
                canary.add_metric([label], general[v]["canary"])
                if general[v]["drift"] is not None:
                    drift.add_metric([label], general[v]["drift"])
        yield canary
        yield drift


def _histogram(name: str, doc: str, edges, counts: list[int], total: float) -> HistogramMetricFamily:
    run, buckets = 0, []
    for e, n in zip([*map(str, edges), "+Inf"], counts):
        run += n
        buckets.append((e, run))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


def batching_metrics(server):
    """The in-process batcher: batch sizes, queue depth and waits, decode speed."""
    from serving.batching import SIZE_BUCKETS, WAIT_BUCKETS

    b = server.batcher
    if b is None:  # generation on a vLLM server: no in-process batches
        return
    s = b.stats
    yield _histogram("seal_batch_size", "Requests decoded together per batch", SIZE_BUCKETS, s.size_counts,
                     float(s.rows))
    yield _histogram("seal_queue_wait_seconds", "Seconds a query waited for its batch to start", WAIT_BUCKETS,
                     s.wait_counts, s.wait_sum)
    yield GaugeMetricFamily("seal_generation_queue_depth", "Queries waiting for a batch", value=b.depth())
    yield GaugeMetricFamily("seal_generation_in_flight", "Queries in the batch being decoded", value=b.in_flight())
    yield GaugeMetricFamily("seal_batch_tokens_per_second", "Tokens decoded per second of batch time since start",
                            value=s.tokens / s.seconds if s.seconds else 0.0)


def make_registry(agent) -> tuple[CollectorRegistry, Counter]:
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    reg = CollectorRegistry()
    ProcessCollector(registry=reg)  # process_* (resident memory, cpu, open fds)
    PlatformCollector(registry=reg)  # python_info
    GCCollector(registry=reg)  # python_gc_*
    reg.register(AgentCollector(agent))
    requests = Counter("seal_http_requests", "HTTP requests", ["method", "route", "code"], registry=reg)
    return reg, requests
