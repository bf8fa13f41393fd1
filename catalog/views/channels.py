"""(being written)"""

from django.http import HttpResponse


def listing(request, pk=None):
    return HttpResponse(status=501)


def new(request, pk=None):
    return HttpResponse(status=501)


def detail(request, pk=None):
    return HttpResponse(status=501)


def edit(request, pk=None):
    return HttpResponse(status=501)


def delete(request, pk=None):
    return HttpResponse(status=501)


def send_test(request, pk=None):
    return HttpResponse(status=501)

