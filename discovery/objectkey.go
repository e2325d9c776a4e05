package discovery

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// objectKey is the part of an object's metadata that client-go's informers
// read from what they cache: the store key (namespace/name) and the
// resourceVersion, which tells a real update from a resync. It implements
// metav1.Object so that a compact value can stand in for the API object; the
// other fields are not kept, and setting them does nothing. A full
// metav1.ObjectMeta would cost about 250 bytes more per cached object.
type objectKey struct {
	namespace, name, resourceVersion string
}

var _ metav1.Object = (*objectKey)(nil)

func keyOf(m metav1.Object) objectKey {
	return objectKey{namespace: m.GetNamespace(), name: m.GetName(), resourceVersion: m.GetResourceVersion()}
}

func (k *objectKey) GetNamespace() string                                       { return k.namespace }
func (k *objectKey) SetNamespace(ns string)                                     { k.namespace = ns }
func (k *objectKey) GetName() string                                            { return k.name }
func (k *objectKey) SetName(name string)                                        { k.name = name }
func (k *objectKey) GetResourceVersion() string                                 { return k.resourceVersion }
func (k *objectKey) SetResourceVersion(v string)                                { k.resourceVersion = v }
func (k *objectKey) GetGenerateName() string                                    { return "" }
func (k *objectKey) SetGenerateName(string)                                     {}
func (k *objectKey) GetUID() types.UID                                          { return "" }
func (k *objectKey) SetUID(types.UID)                                           {}
func (k *objectKey) GetGeneration() int64                                       { return 0 }
func (k *objectKey) SetGeneration(int64)                                        {}
func (k *objectKey) GetSelfLink() string                                        { return "" }
func (k *objectKey) SetSelfLink(string)                                         {}
func (k *objectKey) GetCreationTimestamp() metav1.Time                          { return metav1.Time{} }
func (k *objectKey) SetCreationTimestamp(metav1.Time)                           {}
func (k *objectKey) GetDeletionTimestamp() *metav1.Time                         { return nil }
func (k *objectKey) SetDeletionTimestamp(*metav1.Time)                          {}
func (k *objectKey) GetDeletionGracePeriodSeconds() *int64                      { return nil }
func (k *objectKey) SetDeletionGracePeriodSeconds(*int64)                       {}
func (k *objectKey) GetLabels() map[string]string                               { return nil }
func (k *objectKey) SetLabels(map[string]string)                                {}
func (k *objectKey) GetAnnotations() map[string]string                          { return nil }
func (k *objectKey) SetAnnotations(map[string]string)                           {}
func (k *objectKey) GetFinalizers() []string                                    { return nil }
func (k *objectKey) SetFinalizers([]string)                                     {}
func (k *objectKey) GetOwnerReferences() []metav1.OwnerReference                { return nil }
func (k *objectKey) SetOwnerReferences([]metav1.OwnerReference)                 {}
func (k *objectKey) GetManagedFields() []metav1.ManagedFieldsEntry              { return nil }
func (k *objectKey) SetManagedFields(managedFields []metav1.ManagedFieldsEntry) {}
