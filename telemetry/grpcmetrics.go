package telemetry

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GRPCMetrics are the gRPC server's metrics, named, labelled and counted as
// go-grpc-middleware's Prometheus provider does (grpc_server_started_total,
// grpc_server_handled_total, grpc_server_msg_received_total,
// grpc_server_msg_sent_total, grpc_server_handling_seconds), with each
// method's series looked up once rather than by label values on every call.
type GRPCMetrics struct {
	started, handled, received, sent *prometheus.CounterVec
	handling                         *prometheus.HistogramVec
	unary                            sync.Map // full method name → *methodMetrics
}

// methodMetrics are one unary method's series.
type methodMetrics struct {
	started, received, sent prometheus.Counter
	handling                prometheus.Observer
	handled                 [codes.Unauthenticated + 1]prometheus.Counter // by code
	labels                  [3]string                                     // type, service, method
}

// NewGRPCMetrics registers the gRPC server metrics on reg. Install its
// UnaryServerInterceptor and call InitializeMetrics once services are
// registered.
func NewGRPCMetrics(reg prometheus.Registerer) *GRPCMetrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	m := &GRPCMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total", Help: "Total number of RPCs started on the server.",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total", Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, append(labels, "grpc_code")),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_received_total", Help: "Total number of RPC stream messages received on the server.",
		}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_sent_total", Help: "Total number of gRPC stream messages sent by the server.",
		}, labels),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: LatencyBuckets,
		}, labels),
	}
	reg.MustRegister(m)
	return m
}

// Describe implements prometheus.Collector.
func (m *GRPCMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *GRPCMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *GRPCMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.started, m.handled, m.received, m.sent, m.handling}
}

// InitializeMetrics creates every series of every method of s at zero, so
// that rates and alerts see them before the first call.
func (m *GRPCMetrics) InitializeMetrics(s *grpc.Server) {
	for service, info := range s.GetServiceInfo() {
		for _, mi := range info.Methods {
			typ := methodType(mi)
			mm := m.seriesOf(typ, service, mi.Name, true)
			if typ == "unary" {
				m.unary.Store("/"+service+"/"+mi.Name, mm)
			}
		}
	}
}

// UnaryServerInterceptor counts and times every unary call: started and
// received when it begins, sent when it succeeds, handled by code and its
// handling time when it ends.
func (m *GRPCMetrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		mm := m.unaryMethod(info.FullMethod)
		mm.started.Inc()
		mm.received.Inc()
		resp, err := handler(ctx, req)
		if err == nil {
			mm.sent.Inc()
		}
		mm.handledCounter(m.handled, codeOf(err)).Inc()
		mm.handling.Observe(time.Since(start).Seconds())
		return resp, err
	}
}

// codeOf is the call's code as the gRPC server answers it: context errors
// become their codes.
func codeOf(err error) codes.Code {
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return status.FromContextError(err).Code()
}

func (mm *methodMetrics) handledCounter(vec *prometheus.CounterVec, c codes.Code) prometheus.Counter {
	if int(c) < len(mm.handled) && mm.handled[c] != nil {
		return mm.handled[c]
	}
	return vec.WithLabelValues(mm.labels[0], mm.labels[1], mm.labels[2], c.String())
}

// unaryMethod returns the series of the unary method fullMethod, creating
// them on first use for a method InitializeMetrics did not see (its handled
// series are then created code by code, as calls end).
func (m *GRPCMetrics) unaryMethod(fullMethod string) *methodMetrics {
	if mm, ok := m.unary.Load(fullMethod); ok {
		return mm.(*methodMetrics)
	}
	service, method := splitMethod(fullMethod)
	mm, _ := m.unary.LoadOrStore(fullMethod, m.seriesOf("unary", service, method, false))
	return mm.(*methodMetrics)
}

// seriesOf creates (at zero, if new) and returns a method's series, those
// of every code of grpc_server_handled_total when allCodes is set.
func (m *GRPCMetrics) seriesOf(typ, service, method string, allCodes bool) *methodMetrics {
	mm := &methodMetrics{
		started:  m.started.WithLabelValues(typ, service, method),
		received: m.received.WithLabelValues(typ, service, method),
		sent:     m.sent.WithLabelValues(typ, service, method),
		handling: m.handling.WithLabelValues(typ, service, method),
		labels:   [3]string{typ, service, method},
	}
	if allCodes {
		for c := range mm.handled {
			mm.handled[c] = m.handled.WithLabelValues(typ, service, method, codes.Code(c).String())
		}
	}
	return mm
}

// splitMethod splits "/service/method"; anything else is unknown.
func splitMethod(fullMethod string) (service, method string) {
	service, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return "unknown", "unknown"
	}
	return service, method
}

func methodType(mi grpc.MethodInfo) string {
	switch {
	case !mi.IsClientStream && !mi.IsServerStream:
		return "unary"
	case mi.IsClientStream && !mi.IsServerStream:
		return "client_stream"
	case !mi.IsClientStream && mi.IsServerStream:
		return "server_stream"
	}
	return "bidi_stream"
}
