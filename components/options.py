"""Resource options for a component's children."""

from __future__ import annotations

import pulumi


def child_options(parent: pulumi.ComponentResource, opts: pulumi.ResourceOptions | None,
                  **options) -> pulumi.ResourceOptions:
    """Parented to the component, and after whatever the component was told to come after: a child does
    not wait for its parent's depends_on by itself, so a container could otherwise mount a folder that
    is not there yet, or an image be pushed before its registry runs."""
    return pulumi.ResourceOptions(parent=parent, depends_on=opts.depends_on if opts else None, **options)
