"""eServices failover (multimedia-switch) behind a two-person approval, verified and audited."""
