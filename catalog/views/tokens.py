"""(being written)"""

from django.http import HttpResponse


def listing(request, pk=None):
    return HttpResponse(status=501)


def new(request, pk=None):
    return HttpResponse(status=501)


def revoke(request, pk=None):
    return HttpResponse(status=501)

