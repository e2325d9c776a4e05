package resources

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nodexds/nodexds/discovery"
)

// Service annotations for load balancing, all optional.
const (
	AnnotationLBPolicy        = discovery.AnnotationPrefix + "lb-policy"
	AnnotationHashHeader      = discovery.AnnotationPrefix + "hash-header"
	AnnotationRingMinSize     = discovery.AnnotationPrefix + "ring-min-size"
	AnnotationRingMaxSize     = discovery.AnnotationPrefix + "ring-max-size"
	AnnotationOutlier         = discovery.AnnotationPrefix + "outlier-detection"
	AnnotationMaxRequests     = discovery.AnnotationPrefix + "max-requests"
	AnnotationTimeout         = discovery.AnnotationPrefix + "timeout"
	AnnotationRetryOn         = discovery.AnnotationPrefix + "retry-on"
	AnnotationRetryAttempts   = discovery.AnnotationPrefix + "retry-attempts"
	AnnotationRetryBackoff    = discovery.AnnotationPrefix + "retry-backoff"
	AnnotationEndpointHeader  = discovery.AnnotationPrefix + "endpoint-header"
	AnnotationPickerFallback  = discovery.AnnotationPrefix + "endpoint-header-fallback"
	defaultRingMin, ringLimit = 1024, 8 << 20
	// gRPC clients cap rings at 4096 entries unless told otherwise, so a
	// bigger default would only cost memory in clients that do not cap.
	defaultRingMax = 4096
)

// LB policies a Service may ask for.
const (
	RoundRobin   = "round_robin"
	LeastRequest = "least_request"
	RingHash     = "ring_hash"
)

// LBConfig is how clients balance one Service, from its annotations.
type LBConfig struct {
	Policy           string // RoundRobin, LeastRequest or RingHash
	HashHeader       string // ring hash key; "" hashes randomly per RPC
	RingMin, RingMax uint64
	Outlier          *Outlier
	MaxRequests      uint32        // circuit breaking; 0: gRPC's default (1024)
	Timeout          time.Duration // max stream duration; 0: none
	Retry            *Retry
	// EndpointHeader names the request header that picks one endpoint; "".
	EndpointHeader string
	// PickerFailClosed fails a request whose header names no member, rather
	// than balancing it normally.
	PickerFailClosed bool
}

// Outlier is outlier detection (gRFC A50). Zero thresholds are off.
type Outlier struct {
	Interval, BaseEjection, MaxEjection time.Duration
	MaxEjectionPercent                  uint32
	SuccessRateStdevFactor              uint32 // ×1000, as Envoy; 0 disables
	SuccessRateMinHosts                 uint32
	SuccessRateRequestVolume            uint32
	FailurePercentage                   uint32 // threshold; 0 disables
	FailurePercentageMinHosts           uint32
	FailurePercentageRequestVolume      uint32
}

// Retry is a retry policy (gRFC A44).
type Retry struct {
	On          []string // gRPC status names: cancelled, deadline-exceeded, internal, resource-exhausted, unavailable
	Attempts    uint32   // total attempts, 2..5
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
}

// DefaultLB is what a Service without annotations gets.
var DefaultLB = LBConfig{Policy: RoundRobin, RingMin: defaultRingMin, RingMax: defaultRingMax}

// headerName is what gRPC can match or hash on: lowercase, not pseudo,
// not gRPC's own, not binary.
var headerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

func checkHeader(h string) error {
	switch {
	case !headerName.MatchString(h):
		return errors.New("want a lowercase header name")
	case strings.HasPrefix(h, "grpc-"):
		return errors.New("grpc- headers are reserved and never matched")
	case strings.HasSuffix(h, "-bin"):
		return errors.New("binary (-bin) headers cannot be matched")
	}
	return nil
}

// LBConfigFor reads a Service's load-balancing annotations. Each value that
// does not parse is returned as an error and its default kept: one typo never
// disables the rest.
func LBConfigFor(svc *discovery.Service) (LBConfig, []*discovery.AnnotationError) {
	c := DefaultLB
	r := annotations{a: svc.Annotations}
	r.policy(&c)
	r.ringSize(&c)
	r.outlier(&c)
	r.limits(&c)
	if r.has(AnnotationRetryOn) || r.has(AnnotationRetryAttempts) || r.has(AnnotationRetryBackoff) {
		c.Retry = r.retry()
	}
	r.endpointPicker(&c)
	return c, r.errs
}

// annotations reads one Service's annotations and collects the values that
// do not parse, in the order they are read.
type annotations struct {
	a    map[string]string
	errs []*discovery.AnnotationError
}

func (r *annotations) has(key string) bool { _, ok := r.a[key]; return ok }

func (r *annotations) bad(key string, err error) {
	r.errs = append(r.errs, &discovery.AnnotationError{Key: key, Value: r.a[key], Err: err})
}

// ok records err, if any, against key, and says whether there was none.
func (r *annotations) ok(key string, err error) bool {
	if err != nil {
		r.bad(key, err)
	}
	return err == nil
}

// uint parses key as a bits-bit number within [lo, hi], refusing any other
// number with the error outside.
func (r *annotations) uint(key string, bits int, lo, hi uint64, outside string) (uint64, bool) {
	n, err := strconv.ParseUint(r.a[key], 10, bits)
	if err == nil && (n < lo || n > hi) {
		err = errors.New(outside)
	}
	return n, r.ok(key, err)
}

// policy reads the hash header and the policy. A hash header implies ring
// hash, so a policy other than ring hash next to one is refused.
func (r *annotations) policy(c *LBConfig) {
	if h, set := r.a[AnnotationHashHeader]; set && r.ok(AnnotationHashHeader, checkHeader(h)) {
		c.HashHeader, c.Policy = h, RingHash
	}
	if !r.has(AnnotationLBPolicy) {
		return
	}
	switch p := r.a[AnnotationLBPolicy]; p {
	case RoundRobin, LeastRequest, RingHash:
		if c.HashHeader != "" && p != RingHash {
			r.bad(AnnotationLBPolicy, fmt.Errorf("%s is set: only %s can use it", AnnotationHashHeader, RingHash))
		} else {
			c.Policy = p
		}
	default:
		r.bad(AnnotationLBPolicy, fmt.Errorf("want %s, %s or %s", RoundRobin, LeastRequest, RingHash))
	}
}

// ringSize reads the ring bounds; a pair whose minimum exceeds its maximum
// keeps both defaults.
func (r *annotations) ringSize(c *LBConfig) {
	ringMin, ringMax := c.RingMin, c.RingMax
	outside := fmt.Sprintf("must be between 1 and %d", ringLimit)
	if r.has(AnnotationRingMinSize) {
		if n, ok := r.uint(AnnotationRingMinSize, 64, 1, ringLimit, outside); ok {
			ringMin = n
		}
	}
	if r.has(AnnotationRingMaxSize) {
		if n, ok := r.uint(AnnotationRingMaxSize, 64, 1, ringLimit, outside); ok {
			ringMax = n
		}
	}
	if ringMin > ringMax {
		r.bad(AnnotationRingMinSize, fmt.Errorf("larger than the maximum ring size %d", ringMax))
	} else {
		c.RingMin, c.RingMax = ringMin, ringMax
	}
}

func (r *annotations) outlier(c *LBConfig) {
	if !r.has(AnnotationOutlier) {
		return
	}
	if o, err := parseOutlier(r.a[AnnotationOutlier]); r.ok(AnnotationOutlier, err) {
		c.Outlier = o
	}
}

// limits reads the circuit-breaking limit and the stream timeout.
func (r *annotations) limits(c *LBConfig) {
	if r.has(AnnotationMaxRequests) {
		if n, ok := r.uint(AnnotationMaxRequests, 32, 1, math.MaxUint32, "must be at least 1"); ok {
			c.MaxRequests = uint32(n)
		}
	}
	if r.has(AnnotationTimeout) {
		d, err := time.ParseDuration(r.a[AnnotationTimeout])
		if err == nil && (d <= 0 || d > 24*time.Hour) {
			err = errors.New("must be positive and at most 24h")
		}
		if r.ok(AnnotationTimeout, err) {
			c.Timeout = d
		}
	}
}

// endpointPicker reads the header that picks one endpoint and what to do
// when it names none.
func (r *annotations) endpointPicker(c *LBConfig) {
	if h, set := r.a[AnnotationEndpointHeader]; set && r.ok(AnnotationEndpointHeader, checkHeader(h)) {
		c.EndpointHeader = h
	}
	if r.has(AnnotationPickerFallback) {
		switch r.a[AnnotationPickerFallback] {
		case "lb":
		case "fail":
			c.PickerFailClosed = true
		default:
			r.bad(AnnotationPickerFallback, errors.New(`want "lb" or "fail"`))
		}
	}
}

// parseOutlier reads "key=value,..." with durations and percentages, e.g.
// "failure-percentage=50,interval=10s,base-ejection-time=30s".
func parseOutlier(s string) (*Outlier, error) {
	o := &Outlier{Interval: 10 * time.Second, BaseEjection: 30 * time.Second, MaxEjection: 300 * time.Second,
		MaxEjectionPercent: 10, SuccessRateMinHosts: 5, SuccessRateRequestVolume: 100,
		FailurePercentageMinHosts: 5, FailurePercentageRequestVolume: 50}
	durations := map[string]*time.Duration{"interval": &o.Interval, "base-ejection-time": &o.BaseEjection, "max-ejection-time": &o.MaxEjection}
	percents := map[string]*uint32{"max-ejection-percent": &o.MaxEjectionPercent, "failure-percentage": &o.FailurePercentage}
	counts := map[string]*uint32{
		"success-rate-stdev-factor": &o.SuccessRateStdevFactor, "success-rate-min-hosts": &o.SuccessRateMinHosts,
		"success-rate-request-volume": &o.SuccessRateRequestVolume, "failure-percentage-min-hosts": &o.FailurePercentageMinHosts,
		"failure-percentage-request-volume": &o.FailurePercentageRequestVolume,
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("%q: want key=value", kv)
		}
		switch {
		case durations[k] != nil:
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s: want a positive duration", k)
			}
			*durations[k] = d
		case percents[k] != nil:
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n > 100 {
				return nil, fmt.Errorf("%s: want a percentage 0-100", k)
			}
			*percents[k] = uint32(n)
		case counts[k] != nil:
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%s: want a number", k)
			}
			*counts[k] = uint32(n)
		default:
			return nil, fmt.Errorf("unknown key %q", k)
		}
	}
	if o.SuccessRateStdevFactor == 0 && o.FailurePercentage == 0 {
		return nil, errors.New("enable success-rate-stdev-factor or failure-percentage")
	}
	return o, nil
}

var retryable = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

// retry reads the retry policy; each of its annotations that does not parse
// keeps its own default.
func (r *annotations) retry() *Retry {
	rt := &Retry{On: []string{"unavailable"}, Attempts: 3, BaseBackoff: 25 * time.Millisecond, MaxBackoff: 250 * time.Millisecond}
	if v, ok := r.a[AnnotationRetryOn]; ok {
		var on []string
		for _, c := range strings.Split(v, ",") {
			c = strings.TrimSpace(c)
			if !contains(retryable, c) {
				r.bad(AnnotationRetryOn, fmt.Errorf("%q: want some of %s", c, strings.Join(retryable, ", ")))
				on = nil
				break
			}
			on = append(on, c)
		}
		if on != nil {
			rt.On = on
		}
	}
	if r.has(AnnotationRetryAttempts) {
		if n, ok := r.uint(AnnotationRetryAttempts, 32, 2, 5, "must be between 2 and 5 (gRPC's limit)"); ok {
			rt.Attempts = uint32(n)
		}
	}
	if v, ok := r.a[AnnotationRetryBackoff]; ok {
		base, maxB, cut := strings.Cut(v, ",")
		b, err1 := time.ParseDuration(strings.TrimSpace(base))
		m, err2 := time.ParseDuration(strings.TrimSpace(maxB))
		if !cut || err1 != nil || err2 != nil || b <= 0 || m < b {
			r.bad(AnnotationRetryBackoff, errors.New(`want "base,max" durations with 0 < base <= max`))
		} else {
			rt.BaseBackoff, rt.MaxBackoff = b, m
		}
	}
	return rt
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
