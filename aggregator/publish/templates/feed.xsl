<?xml version="1.0" encoding="UTF-8"?>
<!-- Turns this site's Atom and RSS feeds into a readable page when opened in a browser.
     Readers ignore it; only the browser applies it. -->
<xsl:stylesheet version="1.0"
    xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:atom="http://www.w3.org/2005/Atom"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:fh="http://purl.org/syndication/history/1.0"
    exclude-result-prefixes="atom dc fh">
<xsl:output method="html" encoding="UTF-8" indent="no"/>

<xsl:template match="/">
  <xsl:variable name="title" select="atom:feed/atom:title | rss/channel/title"/>
  <html lang="{{ language }}">
  <head>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1"/>
    <title><xsl:value-of select="$title"/> ({{ t("feed") }})</title>
    <style>
{% include "style.css" %}    </style>
  </head>
  <body>
    <header class="site">
      <p><a href="{atom:feed/atom:link[@rel='alternate']/@href | rss/channel/link}">{{ t("all_feeds") }}</a></p>
      <h1><xsl:value-of select="$title"/></h1>
      <p><xsl:value-of select="atom:feed/atom:subtitle | rss/channel/description"/></p>
    </header>
    <p class="note">
      {{ t("this_is_a_feed") }}<xsl:if test="*/fh:archive | */*/fh:archive">{{ t("archive_page") }}</xsl:if>.
      {{ t("to_subscribe") }}
      <span class="feed-url"><xsl:value-of select="atom:feed/atom:link[@rel='self']/@href | rss/channel/atom:link[@rel='self']/@href"/></span>
    </p>
    <xsl:variable name="n" select="count(atom:feed/atom:entry | rss/channel/item)"/>
    <p class="meta"><span class="count"><xsl:value-of select="$n"/>
      <xsl:choose><xsl:when test="$n = 1">{{ t("entries", n=1)[1:] }}</xsl:when><xsl:otherwise>{{ t("entries", n=2)[1:] }}</xsl:otherwise></xsl:choose>
    </span></p>
    <xsl:apply-templates select="atom:feed/atom:entry | rss/channel/item"/>
    <nav class="pager">
      <xsl:for-each select="atom:feed/atom:link[@rel='current'] | rss/channel/atom:link[@rel='current']">
        <a href="{@href}">{{ t("newest_entries") }}</a>
        <xsl:text> · </xsl:text>
      </xsl:for-each>
      <xsl:for-each select="atom:feed/atom:link[@rel='prev-archive'] | rss/channel/atom:link[@rel='prev-archive']">
        <a href="{@href}" rel="prev">{{ t("older_entries") }}</a>
      </xsl:for-each>
    </nav>
  </body>
  </html>
</xsl:template>

<xsl:template match="atom:entry">
  <article class="item">
    <h2><a href="{atom:link[@rel='alternate']/@href}"><xsl:value-of select="atom:title"/></a></h2>
    <p class="meta">
      <xsl:for-each select="atom:author/atom:name">
        <xsl:value-of select="."/><xsl:text> · </xsl:text>
      </xsl:for-each>
      <time datetime="{atom:published}"><xsl:value-of select="substring(atom:published, 1, 10)"/></time>
    </p>
    <p><xsl:value-of select="atom:summary"/></p>
    <xsl:if test="atom:category">
      <p class="chips">
        <xsl:for-each select="atom:category">
          <a href="{@scheme}atom.xml"><xsl:value-of select="@label"/></a>
        </xsl:for-each>
      </p>
    </xsl:if>
  </article>
</xsl:template>

<xsl:template match="item">
  <article class="item">
    <h2><a href="{link}"><xsl:value-of select="title"/></a></h2>
    <p class="meta">
      <xsl:for-each select="dc:creator">
        <xsl:value-of select="."/><xsl:text> · </xsl:text>
      </xsl:for-each>
      <time><xsl:value-of select="pubDate"/></time>
    </p>
    <p><xsl:value-of select="description"/></p>
    <xsl:if test="category">
      <p class="chips">
        <xsl:for-each select="category">
          <a href="{@domain}rss.xml"><xsl:value-of select="."/></a>
        </xsl:for-each>
      </p>
    </xsl:if>
  </article>
</xsl:template>

</xsl:stylesheet>
