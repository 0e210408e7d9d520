"""Running ``ziya-trt serve`` in production: Kubernetes manifests rendered from its ``ServeConfig``.

``options.K8sOptions`` is the one typed configuration of a deployment (names, image, volume, probes, scaling),
validated once; ``k8s.render`` turns it and a ``ServeConfig`` into plain dicts, one per Kubernetes object, and
``k8s.to_yaml`` writes them. The container images and the compose file are in ``deploy/docker/`` at the top of
the checkout; docs/deploy.md says how the pieces fit.
"""
