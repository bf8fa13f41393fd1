"""(being written) The JSON API under /api/v1/."""

urlpatterns = []
