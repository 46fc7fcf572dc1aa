"""Corral's Kubernetes operator (kopf) onto KubeRay.

Not built yet: the operator arrives with the Kubernetes issue. Importing this
package works so that packaging finds both source roots; running it says so.
"""

__all__: list[str] = []
