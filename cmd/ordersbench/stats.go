package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// quantile returns the q-quantile (0 < q <= 1) of d by the nearest-rank
// method, in milliseconds; d is sorted in place.
func quantile(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	slices.Sort(d)
	rank := int(math.Ceil(q*float64(len(d)))) - 1
	return ms(d[min(max(rank, 0), len(d)-1)])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// scrape reads the Prometheus text exposition at url.
func scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return mfs, nil
}

// histogram returns the one unlabelled histogram of family name.
func histogram(mfs map[string]*dto.MetricFamily, name string) (*dto.Histogram, error) {
	mf := mfs[name]
	if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetHistogram() == nil {
		return nil, fmt.Errorf("metric %s: not one histogram", name)
	}
	return mf.GetMetric()[0].GetHistogram(), nil
}

// gauge returns the value of the one unlabelled gauge or counter name.
func gauge(mfs map[string]*dto.MetricFamily, name string) float64 {
	mf := mfs[name]
	if mf == nil || len(mf.GetMetric()) != 1 {
		return math.NaN()
	}
	m := mf.GetMetric()[0]
	if m.GetGauge() != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}

// histQuantile returns the q-quantile, in milliseconds, of the observations
// made between the scrapes before and after, interpolating linearly inside
// the bucket it falls in (as PromQL's histogram_quantile does). It also
// returns how many observations there were; a quantile in the +Inf bucket
// is reported as the highest finite bound.
func histQuantile(before, after *dto.Histogram, q float64) (float64, uint64) {
	b, a := before.GetBucket(), after.GetBucket()
	total := after.GetSampleCount() - before.GetSampleCount()
	if total == 0 || len(a) == 0 || len(a) != len(b) {
		return math.NaN(), total
	}
	rank := q * float64(total)
	var prevCount float64
	var prevBound float64
	for i := range a {
		count := float64(a[i].GetCumulativeCount() - b[i].GetCumulativeCount())
		bound := a[i].GetUpperBound()
		if math.IsInf(bound, 1) {
			// Past the last finite bucket: its bound is all that is known,
			// a lower bound of the quantile (JSON has no +Inf either).
			return prevBound * 1000, total
		}
		if count >= rank {
			if count == prevCount {
				return bound * 1000, total
			}
			return (prevBound + (bound-prevBound)*(rank-prevCount)/(count-prevCount)) * 1000, total
		}
		prevCount, prevBound = count, bound
	}
	return prevBound * 1000, total
}
