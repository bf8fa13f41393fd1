"""(being written)"""

from django.http import HttpResponse


def listing(request, pk=None):
    return HttpResponse(status=501)

