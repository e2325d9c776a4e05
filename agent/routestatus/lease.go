package routestatus

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
)

// LeasesResource is coordination.k8s.io/v1 Leases.
var LeasesResource = schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}

// Elector holds a coordination.k8s.io Lease the way client-go's
// tools/leaderelection does (the same Lease fields, the same timing rules,
// so kubectl and other tools read it alike), over a dynamic client: client-go's
// package links every API group's typed client, 10 MB of binary for one
// Lease.
//
// A candidate takes the Lease when it is free or its holder has not renewed
// it for LeaseDuration, as this candidate's own clock measures from when it
// last saw the Lease change (clocks of nodes are never compared). The holder
// renews every RetryPeriod and stops leading when it could not renew for
// RenewDeadline, which is shorter than LeaseDuration: it has stopped before
// anyone else may take over.
type Elector struct {
	Client              dynamic.Interface
	Namespace, Name     string
	Identity            string
	LeaseDuration       time.Duration // default 15 s
	RenewDeadline       time.Duration // default 10 s
	RetryPeriod         time.Duration // default 2 s
	Log                 *slog.Logger
	now                 func() time.Time
	observedHolder      string
	observedRenew       time.Time
	observedAt          time.Time
	observedTransitions int32
}

func (e *Elector) defaults() {
	if e.LeaseDuration == 0 {
		e.LeaseDuration = 15 * time.Second
	}
	if e.RenewDeadline == 0 {
		e.RenewDeadline = 10 * time.Second
	}
	if e.RetryPeriod == 0 {
		e.RetryPeriod = 2 * time.Second
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.Log == nil {
		e.Log = slog.New(slog.DiscardHandler)
	}
}

// Run competes for the Lease until ctx is done. While this candidate holds
// it, lead runs with a context that ends as soon as the Lease is lost (or
// ctx is done); Run waits for lead to return before competing again. When
// ctx is done, a held Lease is released, so another candidate takes over at
// once.
func (e *Elector) Run(ctx context.Context, lead func(context.Context)) {
	e.defaults()
	for ctx.Err() == nil {
		if !e.acquire(ctx) {
			return
		}
		e.Log.Info("route status: leading", "lease", e.Namespace+"/"+e.Name, "identity", e.Identity)
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			lead(lctx)
		}()
		e.renew(lctx, done)
		cancel()
		<-done // writing has stopped
		if ctx.Err() != nil {
			e.release()
			return
		}
		e.Log.Warn("route status: lost the lease", "lease", e.Namespace+"/"+e.Name, "identity", e.Identity)
	}
}

// acquire tries every RetryPeriod (jittered) until it holds the Lease; false
// when ctx is done first.
func (e *Elector) acquire(ctx context.Context) bool {
	for {
		if ok, err := e.tryAcquireOrRenew(ctx); ok {
			return true
		} else if err != nil && ctx.Err() == nil {
			e.Log.Debug("route status: lease not acquired", "lease", e.Namespace+"/"+e.Name, "error", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(jitter(e.RetryPeriod)):
		}
	}
}

// renew renews the Lease every RetryPeriod until it cannot for
// RenewDeadline, ctx is done, or lead returns.
func (e *Elector) renew(ctx context.Context, leadDone <-chan struct{}) {
	last := e.now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-leadDone:
			return
		case <-time.After(e.RetryPeriod):
		}
		rctx, cancel := context.WithDeadline(ctx, last.Add(e.RenewDeadline))
		ok, err := e.tryAcquireOrRenew(rctx)
		cancel()
		switch {
		case ok:
			last = e.now()
		case e.now().Sub(last) >= e.RenewDeadline || (err == nil && ctx.Err() == nil):
			// Past the deadline, or someone else holds it.
			return
		}
	}
}

func jitter(d time.Duration) time.Duration { return d + time.Duration(rand.Float64()*0.2*float64(d)) }

// tryAcquireOrRenew takes or renews the Lease if it may; it reports whether
// this candidate holds it now.
func (e *Elector) tryAcquireOrRenew(ctx context.Context) (bool, error) {
	leases := e.Client.Resource(LeasesResource).Namespace(e.Namespace)
	now := e.now()
	mine := coordinationv1.LeaseSpec{
		HolderIdentity:       ptr.To(e.Identity),
		LeaseDurationSeconds: ptr.To(int32(e.LeaseDuration / time.Second)),
		AcquireTime:          &metav1.MicroTime{Time: now},
		RenewTime:            &metav1.MicroTime{Time: now},
		LeaseTransitions:     ptr.To(int32(0)),
	}
	u, err := leases.Get(ctx, e.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: e.Name, Namespace: e.Namespace}, Spec: mine}
		obj, err := toUnstructured(l)
		if err != nil {
			return false, err
		}
		if _, err := leases.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return false, err
		}
		e.observe(mine, now)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	var l coordinationv1.Lease
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &l); err != nil {
		return false, fmt.Errorf("lease %s/%s: %w", e.Namespace, e.Name, err)
	}
	holder := ptr.Deref(l.Spec.HolderIdentity, "")
	renewed := time.Time{}
	if l.Spec.RenewTime != nil {
		renewed = l.Spec.RenewTime.Time
	}
	if holder != e.observedHolder || !renewed.Equal(e.observedRenew) {
		e.observe(l.Spec, now)
	}
	transitions := ptr.Deref(l.Spec.LeaseTransitions, 0)
	if holder != e.Identity {
		duration := time.Duration(ptr.Deref(l.Spec.LeaseDurationSeconds, 0)) * time.Second
		if holder != "" && now.Before(e.observedAt.Add(duration)) {
			return false, nil // held by another, not expired
		}
		transitions++
	} else if l.Spec.AcquireTime != nil {
		mine.AcquireTime = l.Spec.AcquireTime
	}
	mine.LeaseTransitions = ptr.To(transitions)
	l.Spec = mine
	obj, err := toUnstructured(&l)
	if err != nil {
		return false, err
	}
	if _, err := leases.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return false, err // a conflict: someone else wrote it first
	}
	e.observe(mine, now)
	return true, nil
}

func (e *Elector) observe(s coordinationv1.LeaseSpec, now time.Time) {
	e.observedHolder = ptr.Deref(s.HolderIdentity, "")
	e.observedRenew = time.Time{}
	if s.RenewTime != nil {
		e.observedRenew = s.RenewTime.Time
	}
	e.observedTransitions = ptr.Deref(s.LeaseTransitions, 0)
	e.observedAt = now
}

// release gives the Lease up, as client-go's ReleaseOnCancel does: no
// holder, and a duration of 1 s.
func (e *Elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), e.RetryPeriod)
	defer cancel()
	leases := e.Client.Resource(LeasesResource).Namespace(e.Namespace)
	u, err := leases.Get(ctx, e.Name, metav1.GetOptions{})
	if err != nil {
		return
	}
	var l coordinationv1.Lease
	if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &l) != nil || ptr.Deref(l.Spec.HolderIdentity, "") != e.Identity {
		return
	}
	now := metav1.MicroTime{Time: e.now()}
	l.Spec.HolderIdentity = ptr.To("")
	l.Spec.LeaseDurationSeconds = ptr.To(int32(1))
	l.Spec.RenewTime, l.Spec.AcquireTime = &now, &now
	if obj, err := toUnstructured(&l); err == nil {
		if _, err := leases.Update(ctx, obj, metav1.UpdateOptions{}); err == nil {
			e.Log.Info("route status: released the lease", "lease", e.Namespace+"/"+e.Name)
		}
	}
}

func toUnstructured(l *coordinationv1.Lease) (*unstructured.Unstructured, error) {
	l.APIVersion, l.Kind = "coordination.k8s.io/v1", "Lease"
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(l)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}
